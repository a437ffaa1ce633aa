"""One harness for every Python suite that starts real processes.

Used by tests/integration, tests/redis_e2e and tests/server (pytest) and by
tests/soak/soak.py (plain script), so it does not import pytest.

Classes:

- Gateway(settings, env=None): marketo-gateway with an INI file written from
  `settings`, a dict of dotted keys "section.key" -> value (None: left out).
- Sim(user_id, encryption_key, leads=None, latency_ms=None, extra=()):
  marketo-sim and its admin API (/_sim/stats, /_sim/faults, /_sim/limits,
  /_sim/reset).
- Redis(port=None): a redis-server without persistence; kill() and restart()
  on the same port.

Every process: its own temp dir (or a given workdir), the environment of this
process minus the variables the gateway reads as settings (MARKETO_*,
GATEWAY_*, AUTH_*, ...; see SETTINGS_ENV_PREFIXES) plus `env`, stderr captured
to a log file there (log_text()), port 0 read back from the
"<name> listening on HOST:PORT" stdout line (stdout then drained), and
stop(): SIGTERM, wait up to STOP_TIMEOUT s (SIGKILL only after that), then the
captured stderr is scanned for sanitizer reports. stop() returns a Stopped
record whose `problems` lists every sanitizer report, a process that had to be
SIGKILLed, and an exit status other than 0; `Stopped.raise_for_problems()` or
`stop_all()` turn them into errors. A process that a test killed on purpose
with SIGKILL (kill(), or proc.kill(): an exit by SIGKILL that stop() did not
send) is exempt from the clean-exit checks, for that process only; a
sanitizer report it printed before it was killed is still reported. A sim
that outlives STOP_TIMEOUT is a warning only (see Sim).
stop_all() keeps the temp dir of a process with a problem (its path is in the
message), MGW_KEEP_LOGS=1 keeps every one.
"""
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GATEWAY_BIN = os.path.abspath(os.environ.get(
    "GATEWAY_BIN", os.path.join(ROOT, "build", "gateway", "marketo-gateway")))
SIM_BIN = os.path.abspath(os.environ.get(
    "SIM_BIN", os.path.join(ROOT, "build", "sim", "marketo-sim")))
REDIS_SERVER = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") \
    or "/usr/bin/redis-server"

# The gateway reads SECTION_KEY environment variables for every setting
# (config/config.c, load_env); these would override the INI file we write.
SETTINGS_SECTIONS = ("marketo", "gateway", "auth", "cursor", "redis", "cache", "ratelimit",
                     "cors")
SETTINGS_ENV_PREFIXES = tuple(s.upper() + "_" for s in SETTINGS_SECTIONS)

# What a sanitizer build prints when it finds a bug or a leak.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: UndefinedBehaviorSanitizer")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
REPORT_CHARS = 8000
REPORT_LINES = 120


class ProcessProblem(AssertionError):
    """A process of ours ended badly: sanitizer report, no exit on SIGTERM, bad status."""


class HarnessWarning(UserWarning):
    """Something worth knowing about a stop that does not fail the test."""


class NotAvailable(RuntimeError):
    """A binary the harness needs is missing (suites turn this into a skip)."""


def need(path):
    """The absolute path of a binary (children run in their temp dir), or NotAvailable."""
    if os.sep not in path:
        path = shutil.which(path) or path
    if not os.path.exists(path):
        raise NotAvailable("binary not built: %s" % path)
    return os.path.abspath(path)


def child_env(extra=None, sections=()):
    """os.environ without the settings variables of the gateway, plus extra."""
    prefixes = SETTINGS_ENV_PREFIXES + tuple(s.upper() + "_" for s in sections)
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra or {})
    return env


def write_ini(path, settings):
    """Writes {"section.key": value} as an INI file; None values are left out."""
    sections = {}
    for dotted, value in settings.items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        sections.setdefault(section, {})[key] = value
    with open(path, "w") as f:
        for section, kv in sections.items():
            f.write("[%s]\n" % section)
            for k, v in kv.items():
                if isinstance(v, bool):
                    v = "true" if v else "false"
                f.write("%s = %s\n" % (k, v))
    return sections


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sanitizer_reports(text):
    """Excerpts of every sanitizer report in text.

    An excerpt starts at the line of the marker and ends at the report's
    "SUMMARY: ...Sanitizer" line (ASan, LSan and UBSan with a stack end so),
    or after REPORT_LINES lines, at most REPORT_CHARS characters; lines
    inside an excerpt already taken do not start another one."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        if not any(m in lines[i] for m in SANITIZER_MARKERS):
            i += 1
            continue
        # a UBSan line without a stack ends at the next JSON log line
        ubsan_line = "runtime error:" in lines[i]
        end = i + 1
        while end < len(lines) and end - i < REPORT_LINES and \
                not lines[end - 1].startswith("SUMMARY:"):
            if ubsan_line and lines[end].startswith("{"):
                break
            end += 1
        out.append("\n".join(lines[i:end])[:REPORT_CHARS])
        i = end
    return out


def read_listen_line(proc, name, timeout=START_TIMEOUT, lines=None, why=None):
    """Reads proc's stdout until "<name> listening on HOST:PORT"; returns (host, port).

    Lines read before it go to `lines` (a list) when given; why() gives text
    (the captured stderr) for the error when the process dies first."""
    pat = re.compile(r"^%s listening on (.+):(\d+)\s*$" % re.escape(name))
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace").rstrip("\r")
                if lines is not None:
                    lines.append(text)
                m = pat.match(text)
                if m:
                    return m.group(1), int(m.group(2))
            if chunk:
                continue
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s before listening%s"
                               % (name, proc.returncode, (":\n" + why()[-3000:]) if why else ""))
    raise RuntimeError("no '%s listening on' line within %.0f s" % (name, timeout))


def drain(stream):
    """Keeps reading a pipe so the child never blocks on a full stdout."""
    def run():
        try:
            while os.read(stream.fileno(), 65536):
                pass
        except (OSError, ValueError):
            pass
    threading.Thread(target=run, daemon=True).start()


class Stopped:
    """What stop() found: exit status, whether it was killed, sanitizer reports."""

    def __init__(self, name, pid, returncode, killed_by_test, timed_out, reports, log_path,
                 tail="", timeout_is_problem=True):
        self.name = name
        self.pid = pid
        self.returncode = returncode
        self.killed_by_test = killed_by_test
        self.timed_out = timed_out
        self.reports = reports
        self.log_path = log_path
        self.problems = []
        self.warnings = []
        if returncode == -signal.SIGKILL and not timed_out:
            # SIGKILL never comes from the process itself (a crash is SIGSEGV
            # or SIGABRT, a sanitizer exits 1 or aborts): someone killed it on
            # purpose, e.g. a test through proc.kill() rather than kill().
            killed_by_test = self.killed_by_test = True
        for r in reports:
            self.problems.append("%s (pid %d): sanitizer report in its stderr:\n%s"
                                 % (name, pid, r))
        if not killed_by_test:
            if timed_out:
                text = ("%s (pid %d) did not exit within %.0f s of SIGTERM and was SIGKILLed "
                        "(a sanitizer report at exit would have been lost)"
                        % (name, pid, STOP_TIMEOUT))
                (self.problems if timeout_is_problem else self.warnings).append(text)
            elif returncode != 0:
                self.problems.append("%s (pid %d) exited with status %s; the end of its stderr:\n%s"
                                     % (name, pid, returncode, tail))

    def raise_for_problems(self):
        if self.problems:
            raise ProcessProblem("\n----\n".join(self.problems))
        return self


class Process:
    """A child process of ours: temp dir, captured stderr, port read back, clean stop."""

    name = "process"          # also the prefix of its listening line
    scan_sanitizers = True
    stop_timeout_is_problem = True   # False: a stop past STOP_TIMEOUT only warns

    def __init__(self, args, env=None, workdir=None, log_name=None, tmp_prefix=None,
                 listen=True, stdout_to_log=False):
        self._own_tmp = None
        if workdir is None:
            workdir = self._own_tmp = tempfile.mkdtemp(prefix=tmp_prefix or "mgw-%s-" % self.name)
        self.workdir = workdir
        self.args = list(args)
        self.env = env
        self.listen = listen
        self.stdout_to_log = stdout_to_log
        self.log_path = os.path.join(workdir, log_name or (self.name + ".log"))
        self.stdout_lines = []
        self.proc = None
        self.killed_by_test = False
        self.stopped = None
        self.host = self.port = None
        self._log = None

    # -- lifecycle -------------------------------------------------------------
    def launch(self):
        """Starts the process (again); reads its port when it prints one."""
        self._log = open(self.log_path, "ab")
        self.killed_by_test = False
        self.stopped = None
        try:
            self.proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL,
                stdout=self._log if self.stdout_to_log else subprocess.PIPE,
                stderr=self._log, cwd=self.workdir, env=self.env)
        except OSError:
            self._log.close()
            self.cleanup()
            raise
        if self.listen:
            try:
                self.host, self.port = read_listen_line(self.proc, self.name,
                                                        lines=self.stdout_lines,
                                                        why=self.log_text)
            except Exception:
                self.stop()
                self.cleanup()
                raise
            drain(self.proc.stdout)
            self.base = "http://127.0.0.1:%d" % self.port
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        """What the process wrote on stderr so far."""
        if self._log is not None and not self._log.closed:
            self._log.flush()
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self):
        """SIGKILL on purpose (a test's crash): exempt from the clean-exit checks."""
        if self.proc is not None and self.proc.poll() is None:
            self.killed_by_test = True
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout=STOP_TIMEOUT, sig=signal.SIGTERM):
        """SIGTERM (or sig), wait up to timeout, SIGKILL after that; scans stderr.

        Returns a Stopped; the same one on a second call. The temp dir stays
        until cleanup()."""
        if self.stopped is not None:
            return self.stopped
        if self.proc is None:
            return None
        timed_out = False
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                self.proc.kill()
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self.proc.stdout is not None:
            try:
                self.proc.stdout.close()
            except OSError:
                pass
        text = self.log_text()
        if self._log is not None:
            self._log.close()
        reports = sanitizer_reports(text) if self.scan_sanitizers else []
        self.stopped = Stopped(self.name, self.proc.pid, self.proc.returncode,
                               self.killed_by_test, timed_out, reports, self.log_path,
                               tail=text[-2000:], timeout_is_problem=self.stop_timeout_is_problem)
        return self.stopped

    def cleanup(self):
        """Removes the temp dir the process had (when the harness made it)."""
        if self._own_tmp is not None:
            shutil.rmtree(self._own_tmp, ignore_errors=True)
            self._own_tmp = None

    def stop_and_cleanup(self, keep_on_problem=True):
        """stop(), then cleanup() unless a problem should keep the logs (or
        MGW_KEEP_LOGS=1 keeps every one); returns the problems."""
        st = self.stop()
        problems = list(st.problems) if st else []
        if os.environ.get("MGW_KEEP_LOGS") == "1":
            self._own_tmp = None
        elif problems and keep_on_problem and self._own_tmp is not None:
            problems[-1] += "\n(logs kept in %s)" % self.workdir
            self._own_tmp = None
        else:
            self.cleanup()
        return problems


def stop_all(procs):
    """Stops every process (all of them, even when one has problems); returns
    the problems as a list of texts, empty when every process ended cleanly.
    What is only worth a warning (a sim that outlived STOP_TIMEOUT) goes to
    warnings.warn (pytest lists it in its warnings summary)."""
    problems = []
    for p in procs:
        try:
            problems += p.stop_and_cleanup()
            st = p.stopped
            for w in (st.warnings if st is not None else []):
                warnings.warn(HarnessWarning(w), stacklevel=2)
        except Exception as e:  # noqa: BLE001 - report it and go on stopping the others
            problems.append("%s: stop failed: %r" % (getattr(p, "name", p), e))
    return problems


class Gateway(Process):
    """marketo-gateway with an INI file made from dotted settings."""

    name = "marketo-gateway"

    def __init__(self, settings, env=None, binary=None, workdir=None, log_name=None,
                 tmp_prefix="mgw-gw-", ini_name="gateway.ini", start=True):
        binary = binary or GATEWAY_BIN
        binary = need(binary)
        super().__init__([binary], env=None, workdir=workdir, log_name=log_name or "gateway.log",
                         tmp_prefix=tmp_prefix)
        self.settings = dict(settings)
        self.ini = os.path.join(self.workdir, ini_name)
        sections = write_ini(self.ini, self.settings)
        self.args = [binary, "--config", self.ini]
        self.env = child_env(env, sections)
        if start:
            self.launch()


class Sim(Process):
    """marketo-sim and its admin API.

    marketo-sim exits 0 on SIGTERM, but only once every call in progress has
    finished (sim/main.c: MHD_stop_daemon joins its thread-per-connection
    handlers; an injected latency is an uninterruptible sleep). A call held by
    a test's latency fault (30 s, 60 s) outlives STOP_TIMEOUT: the sim is then
    SIGKILLed and that is a warning, not a failure (the sim is the test's
    tool, and its leak report is lost only for that run)."""

    name = "marketo-sim"
    stop_timeout_is_problem = False

    def __init__(self, user_id, encryption_key, leads=None, latency_ms=None, extra=(),
                 binary=None, workdir=None, log_name=None, tmp_prefix="mgw-sim-", env=None,
                 start=True):
        binary = binary or SIM_BIN
        binary = need(binary)
        args = [binary, "--listen", "127.0.0.1:0", "--user-id", user_id,
                "--encryption-key", encryption_key]
        if leads is not None:
            args += ["--leads", str(leads)]
        if latency_ms is not None:
            args += ["--latency-ms", str(latency_ms)]
        args += [str(a) for a in extra]
        super().__init__(args, env=child_env(env), workdir=workdir,
                         log_name=log_name or "sim.log", tmp_prefix=tmp_prefix)
        if start:
            self.launch()

    @property
    def endpoint(self):
        return self.base + "/soap/mktows/2_3"

    def admin(self, path, body=None, timeout=10, method=None):
        """GET (body None) or POST (JSON body) an admin route; raises unless 200/201/204."""
        method = method or ("GET" if body is None else "POST")
        r = requests.request(method, self.base + path, json=body, timeout=timeout)
        if r.status_code not in (200, 201, 204):
            raise AssertionError("sim admin %s: %d %s" % (path, r.status_code, r.text[:300]))
        return r

    def stats(self):
        return self.admin("/_sim/stats").json()

    def op(self, name):
        return self.stats().get("operations", {}).get(name, {})

    def calls(self, op="getMultipleLeads"):
        return self.op(op).get("calls", 0)

    def times(self, op="getMultipleLeads"):
        return self.op(op).get("times_ms", [])

    def total_calls(self):
        ops = self.stats().get("operations", {})
        return sum(v.get("calls", 0) for v in ops.values())

    def faults(self, spec):
        return self.admin("/_sim/faults", spec)

    def limits(self, spec):
        return self.admin("/_sim/limits", spec)

    def reset(self):
        return self.admin("/_sim/reset", method="POST")

    def clear_faults(self):
        return self.faults({"operation": "*", "clear": True})

    def soap(self, body):
        return requests.post(self.endpoint, data=body.encode(),
                             headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=10)


class Redis(Process):
    """A redis-server without persistence on a fixed port; kill() and restart() keep it.

    Not our code: no sanitizer scan, but the same clean SIGTERM stop."""

    name = "redis-server"
    scan_sanitizers = False

    def __init__(self, port=None, binary=None, workdir=None, log_name="redis.log",
                 tmp_prefix="mgw-redis-", start=True, attempts=3):
        binary = binary or REDIS_SERVER
        binary = need(binary)
        super().__init__([], env=child_env(), workdir=workdir, log_name=log_name,
                         tmp_prefix=tmp_prefix, listen=False, stdout_to_log=True)
        self.binary = binary
        self.fixed_port = port is not None
        self.port = port
        self.host = "127.0.0.1"
        if start:
            for _ in range(1 if self.fixed_port else attempts):
                if not self.fixed_port:
                    self.port = free_port()
                if self.start():
                    break
            else:
                self.cleanup()
                raise RuntimeError("redis-server did not start:\n" + self.log_text()[-2000:])

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self, timeout=10.0):
        """Starts redis-server on self.port; True once it answers PING."""
        self.args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", self.workdir,
                     "--daemonize", "no"]
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                return False
            if self.ping():
                return True
            time.sleep(0.05)
        self.kill()
        self._log.close()
        return False

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args):
        """Sends one command (RESP array); returns the raw first reply line."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(out)
            return s.recv(65536).split(b"\r\n", 1)[0].decode()

    def kill(self):
        """kill -9 (an outage on purpose); exempt from the clean-exit checks."""
        super().kill()
        if self._log is not None:
            self._log.close()

    def restart(self, tries=20):
        """kill -9 if running, then start again on the same port."""
        self.kill()
        for _ in range(tries):
            if self.start():
                return
            time.sleep(0.1)
        raise RuntimeError("redis-server did not restart on port %d" % self.port)


# ---- small measurements shared by the suites ---------------------------------

def rss_kb(pid, field="VmRSS"):
    """A process's resident memory (or another /proc status field, e.g.
    VmHWM for the peak) in kB; 0 when the field is missing."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def max_in_window(times_ms, window_ms):
    """Most arrivals (times in ms, any order) in any rolling window (t - window, t]."""
    times_ms = sorted(times_ms)
    worst, lo = 0, 0
    for hi, t in enumerate(times_ms):
        while times_ms[lo] <= t - window_ms:
            lo += 1
        worst = max(worst, hi - lo + 1)
    return worst


def metrics_when(fetch, pattern, timeout=5.0):
    """The text of a /metrics scrape once regex pattern (multi-line) matches
    it, or the last scrape after timeout. A request is counted when
    libmicrohttpd completes it, just after its reply went out, so a scrape on
    another connection may come first. fetch() returns a response."""
    deadline = time.monotonic() + timeout
    while True:
        text = fetch().text
        if re.search(pattern, text, re.M) or time.monotonic() > deadline:
            return text
        time.sleep(0.02)
