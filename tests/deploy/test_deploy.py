"""Static checks of deploy/: the Kubernetes manifests and the Dockerfile.

No Docker engine or cluster is available here, so the image and manifests are
checked offline: manifests against the Kubernetes schemas (npm package
kubernetes-models, see validate.mjs), the Dockerfile against the project's one
package list (scripts/deps.sh), meson.build's dependencies, the binaries'
shared libraries and the README's build command.
"""
import json
import os
import re
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
DOCKERFILE = os.path.join(TOP, "deploy", "Dockerfile")


def _validate_results():
    if not shutil.which("node") or not os.path.isdir(os.path.join(HERE, "node_modules")):
        return [{"check": "node and tests/deploy/node_modules present (npm ci)", "ok": False,
                 "detail": "run scripts/test.sh, which installs them"}]
    run = subprocess.run(["node", os.path.join(HERE, "validate.mjs")], capture_output=True,
                         text=True, timeout=120)
    rows = [json.loads(l) for l in run.stdout.splitlines() if l.startswith("{")]
    if not rows:
        rows = [{"check": "validate.mjs ran", "ok": False, "detail": run.stderr[-2000:]}]
    return rows


VALIDATE = _validate_results()


@pytest.mark.parametrize("row", VALIDATE, ids=[r["check"] for r in VALIDATE])
def test_manifest(row):
    assert row["ok"], row["detail"]


def deps():
    """The package lists of scripts/deps.sh, as bash sees them."""
    out = subprocess.run(
        ["bash", "-c", f". {TOP}/scripts/deps.sh; for v in DEPS_BUILD DEPS_RUNTIME DEPS_RUN DEPS_TEST;"
                       " do echo \"$v=$(echo ${!v})\"; done"],
        capture_output=True, text=True, check=True).stdout
    return {k: v.split() for k, v in (l.split("=", 1) for l in out.splitlines())}


def dockerfile():
    with open(DOCKERFILE, encoding="utf-8") as fh:
        return fh.read()


def test_dockerfile_installs_only_from_the_package_list():
    text = dockerfile()
    installs = re.findall(r"apt-get install[^\n]*", text)
    assert len(installs) == 2
    assert "$DEPS_BUILD" in installs[0] and "$DEPS_RUNTIME" in installs[1]
    # nothing else is named inline
    for line in installs:
        words = [w for w in line.split() if not w.startswith(("-", "$")) and w not in ("apt-get", "install", "\\", "&&")]
        assert words == [], f"package named outside scripts/deps.sh: {words}"
    assert text.count(". /src/scripts/deps.sh") == 1 and text.count(". /tmp/deps.sh") == 1


def stages():
    """{stage name: its text} of the Dockerfile, in order (FROM line first)."""
    parts = re.split(r"^(?=FROM )", dockerfile(), flags=re.M)[1:]
    return {re.match(r"FROM \S+ AS (\S+)", p).group(1): p for p in parts}


def test_dockerfile_shape():
    text = dockerfile()
    assert re.findall(r"^FROM (\S+ AS \S+)", text, re.M) == [
        "debian:bookworm-slim AS build", "debian:bookworm-slim AS runtime",
        "runtime AS sim", "runtime AS gateway"], "stages: build, runtime, sim, gateway (default: last)"
    assert re.search(r"^USER \d+:\d+$", stages()["runtime"], re.M), \
        "runtime must run as a numeric non-root user"
    assert "HEALTHCHECK" not in text
    for name, port in (("sim", 8081), ("gateway", 8080)):
        st = stages()[name]
        assert re.search(r"^STOPSIGNAL SIGTERM$", st, re.M), name
        assert re.search(rf"^EXPOSE {port}$", st, re.M), name


def test_each_image_holds_only_its_own_program():
    st = stages()
    assert "marketo-gateway" not in st["sim"], "the sim image must not carry the gateway"
    assert "marketo-sim" not in st["gateway"], "the gateway image must not carry marketo-sim"
    assert "marketo-sim" not in st["runtime"] and "marketo-gateway" not in st["runtime"]
    assert "--from=build /out/usr/local/bin/marketo-gateway" in st["gateway"]
    assert "--from=build /out/usr/local/bin/marketo-sim" in st["sim"]


def test_gateway_default_command_reads_the_container_settings_file():
    """The default command needs no file from the user: it reads the image's
    deploy/container.ini (listen on every interface, nothing else), which
    Kubernetes replaces with its ConfigMap. No setting comes from an image ENV,
    which would override the ConfigMap (environment > file)."""
    st = stages()["gateway"]
    cmd = re.search(r"^CMD (\[.*\])$", st, re.M)
    assert cmd and json.loads(cmd.group(1)) == ["--config", "/etc/marketo-gateway/gateway.ini"]
    assert "COPY deploy/container.ini /etc/marketo-gateway/gateway.ini" in st
    assert not re.search(r"^ENV ", dockerfile(), re.M), "settings come from files, not image ENV"
    with open(os.path.join(TOP, "deploy", "container.ini"), encoding="utf-8") as fh:
        lines = [l.strip() for l in fh if l.strip() and not l.lstrip().startswith((";", "#"))]
    assert lines == ["[gateway]", "listen = 0.0.0.0:8080"]


def test_container_settings_file_loads(tmp_path):
    """With only the environment (as `podman run -e ...` gives it), the
    container file listens on every interface, port 8080 (EXPOSE)."""
    path = os.environ.get("GATEWAY_BIN")
    if not path or not os.path.exists(path):
        pytest.skip("GATEWAY_BIN not built")
    env = {k: v for k, v in os.environ.items()
           if not re.match(r"(MARKETO|GATEWAY|AUTH|CURSOR|REDIS|CACHE|RATELIMIT|CORS)_", k)}
    env["AUTH_API_KEYS"] = "k1"
    out = subprocess.run([path, "--config", os.path.join(TOP, "deploy", "container.ini"),
                          "--check-config"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^listen = 0\.0\.0\.0:8080$", out.stdout, re.M), out.stdout


def test_build_is_the_readme_release_build_out_of_tree():
    """The image builds with the README's release options, in a build
    directory outside the copied sources (/build), installed stripped."""
    with open(os.path.join(TOP, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    m = re.search(r"<!-- release-build -->\s*```sh\n(.+?)\n```", readme, re.S)
    assert m, "README has no release build block"
    readme_opts = set(re.findall(r"(?<=\s)-D\S+", m.group(1)))
    assert readme_opts >= {"-Dbuildtype=release", "-Dtests=false"}
    build = stages()["build"]
    setup = re.search(r"meson setup (\S+) (\S+)((?: -D\S+)*)", build)
    assert setup, "no meson setup BUILDDIR SRCDIR in the build stage"
    builddir, srcdir = setup.group(1), setup.group(2)
    assert srcdir == "/src" and "COPY . /src" in build
    assert builddir.startswith("/") and not builddir.startswith("/src"), "build out of the source tree"
    assert set(setup.group(3).split()) == readme_opts
    assert f"ninja -C {builddir}" in build
    assert re.search(rf"meson install -C {re.escape(builddir)} .*--strip", build), "install stripped"


def _dockerignore_excludes(path):
    """Whether .dockerignore keeps path out of the build context (Docker's
    rules: patterns in order, the last match wins, '!' lets back in; a
    pattern matching a parent directory matches what is below it)."""
    with open(os.path.join(TOP, ".dockerignore"), encoding="utf-8") as fh:
        pats = [l.strip() for l in fh if l.strip() and not l.startswith("#")]

    def rx(p):
        out = ""
        i = 0
        while i < len(p):
            if p.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif p.startswith("**", i):
                out += ".*"
                i += 2
            elif p[i] == "*":
                out += "[^/]*"
                i += 1
            elif p[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(p[i])
                i += 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pat in pats:
        neg = pat.startswith("!")
        r = rx(pat.lstrip("!").rstrip("/"))
        if any(r.match(p) for p in prefixes):
            excluded = not neg
    return excluded


def test_dockerignore_lets_in_what_the_build_reads():
    with open(os.path.join(TOP, "meson.build"), encoding="utf-8") as fh:
        subdirs = [d for d in re.findall(r"subdir\('([^']+)'\)", fh.read())
                   if not d.startswith("tests")]
    assert subdirs
    needed = ["meson.build", "meson_options.txt", "scripts/embed.py"]
    for d in subdirs:
        for dirpath, _, names in os.walk(os.path.join(TOP, d)):
            needed += [os.path.relpath(os.path.join(dirpath, n), TOP) for n in names
                       if not n.endswith((".o", ".pyc"))]
    needed += re.findall(r"^COPY (?!--from)(\S+) ", dockerfile(), re.M)
    missing = [p for p in needed if p != "." and _dockerignore_excludes(p)]
    assert missing == [], f".dockerignore keeps out files the build reads: {missing}"


@pytest.mark.parametrize("path", ["build-release/build.ninja", "build-release/meson-private/coredata.dat",
                                  "build/gateway/marketo-gateway", "build-asan/x", "build-smoke/base.tar",
                                  ".git/HEAD", "tests/deploy/node_modules/yaml/package.json",
                                  "bench/RESULTS.md", "README.md"])
def test_dockerignore_keeps_out_host_files(path):
    assert _dockerignore_excludes(path), f"{path} would reach the build context"


def _apt_known(pkg):
    out = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
    inst = re.search(r"Installed: (\S+)", out)
    cand = re.search(r"Candidate: (\S+)", out)
    return bool((inst and inst.group(1) != "(none)") or (cand and cand.group(1) != "(none)"))


@pytest.mark.parametrize("pkg", sorted(set(deps()["DEPS_BUILD"] + deps()["DEPS_RUNTIME"])))
def test_package_exists_in_debian(pkg):
    assert _apt_known(pkg), f"{pkg} is not a Debian 12 package known to apt"


def _owner(path):
    out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    if out.returncode != 0:
        # merged /usr: /lib/x86_64-linux-gnu/... is owned under /usr/lib/...
        alt = path[4:] if path.startswith("/usr/") else "/usr" + path
        out = subprocess.run(["dpkg", "-S", alt], capture_output=True, text=True)
    assert out.returncode == 0, f"no package owns {path}"
    return out.stdout.split(":")[0]


def test_meson_dependencies_come_from_the_build_list():
    with open(os.path.join(TOP, "meson.build"), encoding="utf-8") as fh:
        names = re.findall(r"dependency\('([^']+)'", fh.read())
    names = [n for n in names if n != "threads"]
    assert names
    build = set(deps()["DEPS_BUILD"])
    for name in names:
        pcdir = subprocess.run(["pkg-config", "--variable=pcfiledir", name], capture_output=True,
                               text=True).stdout.strip()
        assert pcdir, f"pkg-config does not know {name}"
        owner = _owner(os.path.join(pcdir, name + ".pc"))
        assert owner in build, f"{name}.pc comes from {owner}, missing from DEPS_BUILD"


@pytest.mark.parametrize("binary", ["GATEWAY_BIN", "SIM_BIN"])
def test_runtime_libraries_come_from_the_runtime_list(binary):
    path = os.environ.get(binary)
    if not path or not os.path.exists(path):
        pytest.skip(f"{binary} not built")
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"=> (/\S+)", out)
    runtime = set(deps()["DEPS_RUNTIME"])
    base = {"libc6", "libgcc-s1"}  # in every Debian image
    sanitizer = ("libasan", "libubsan")
    for lib in libs:
        owner = _owner(lib)
        if owner.startswith(sanitizer) or owner in base:
            continue
        # direct dependencies must be listed; their own dependencies come with them
        direct = subprocess.run(["objdump", "-p", path], capture_output=True, text=True).stdout
        if os.path.basename(lib) not in direct:
            continue
        assert owner in runtime, f"{os.path.basename(lib)} comes from {owner}, missing from DEPS_RUNTIME"


def _readelf(*args):
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("binary", ["GATEWAY_BIN", "SIM_BIN"])
def test_binary_is_hardened(binary):
    """meson.build's hardening: PIE, full RELRO (BIND_NOW), stack protector,
    and _FORTIFY_SOURCE on an optimized build without sanitizers."""
    path = os.environ.get(binary)
    if not path or not os.path.exists(path):
        pytest.skip(f"{binary} not built")
    header, dynamic = _readelf("-h", path), _readelf("-d", path)
    segments, dynsyms = _readelf("-l", path), _readelf("--dyn-syms", path)
    assert re.search(r"Type:\s+DYN", header) and re.search(r"FLAGS_1.*\bPIE\b", dynamic), "not PIE"
    assert "GNU_RELRO" in segments, "no RELRO segment"
    assert re.search(r"\(FLAGS\).*BIND_NOW|FLAGS_1.*\bNOW\b", dynamic), "not BIND_NOW (partial RELRO)"
    assert "__stack_chk_fail" in dynsyms, "no stack protector"
    sanitized = "libasan" in subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    if not sanitized:
        fortified = set(re.findall(r"\b(__\w+_chk)\b", dynsyms)) - {"__stack_chk_fail"}
        assert fortified, "no _FORTIFY_SOURCE checks (__*_chk) imported"

