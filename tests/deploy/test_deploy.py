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


def test_dockerfile_shape():
    text = dockerfile()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["debian:bookworm-slim", "debian:bookworm-slim"]
    assert re.search(r"^USER \d+:\d+$", text, re.M), "runtime must run as a numeric non-root user"
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    assert "HEALTHCHECK" not in text


def test_dockerfile_build_command_is_the_readme_one():
    with open(os.path.join(TOP, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    m = re.search(r"<!-- release-build -->\s*```sh\n(.+?)\n```", readme, re.S)
    assert m, "README has no release build block"
    command = m.group(1).strip()
    assert f"RUN {command}" in dockerfile()


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

