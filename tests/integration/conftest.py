"""End-to-end fixtures: a real marketo-sim and a real marketo-gateway on loopback.

Binaries come from GATEWAY_BIN and SIM_BIN (defaults: build/gateway/marketo-gateway
and build/sim/marketo-sim under the repository). Both listen on 127.0.0.1 port 0;
the real port is read from their first stdout line. Every process started here is
killed at teardown.

One sim with 2,500 generated leads serves the whole session (`sim`); tests that
need it clean get `fresh_sim` (faults cleared and stats reset through /_sim/reset).
`gateway_factory` starts gateways with per-test settings; `gw` is one with the
defaults pointed at the shared sim.
"""
import json
import os
import signal
import subprocess
import tempfile

import pytest
import requests

import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from mgw_procs import drain as _drain, read_port as _read_port, stop as _stop_proc  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GATEWAY_BIN = os.path.abspath(os.environ.get(
    "GATEWAY_BIN", os.path.join(ROOT, "build", "gateway", "marketo-gateway")))
SIM_BIN = os.path.abspath(os.environ.get("SIM_BIN", os.path.join(ROOT, "build", "sim", "marketo-sim")))
USER_ID = "bigcorp1_461839624B16E06BA2D663"
ENC_KEY = "899756834129871744AAEE88DDCC77CDEEDEC1AAAD66"
API_KEY = "test-key"
SIM_LEADS = 2500
START_TIMEOUT = 15.0
# Lines a sanitizer build prints when it finds a bug or a leak.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def _need(path):
    if not os.path.exists(path):
        pytest.skip("binary not built: %s" % path)




def _stop(proc, sig=signal.SIGTERM, timeout=10.0):
    _stop_proc(proc, sig, timeout)


class Sim:
    """A running marketo-sim and its admin API."""

    def __init__(self, leads=SIM_LEADS, latency_ms=None, extra=()):
        _need(SIM_BIN)
        self.tmp = tempfile.TemporaryDirectory(prefix="leads-sim-")
        args = [SIM_BIN, "--listen", "127.0.0.1:0", "--user-id", USER_ID,
                "--encryption-key", ENC_KEY, "--leads", str(leads)]
        if latency_ms is not None:
            args += ["--latency-ms", str(latency_ms)]
        args += list(extra)
        self.log = open(os.path.join(self.tmp.name, "sim.log"), "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL, cwd=self.tmp.name)
        try:
            self.port = _read_port(self.proc, "marketo-sim listening on")
        except Exception:
            self.stop()
            raise
        _drain(self.proc.stdout)
        self.base = "http://127.0.0.1:%d" % self.port
        self.endpoint = self.base + "/soap/mktows/2_3"

    def stats(self):
        r = requests.get(self.base + "/_sim/stats", timeout=10)
        r.raise_for_status()
        return r.json()

    def calls(self, op):
        return self.stats().get("operations", {}).get(op, {}).get("calls", 0)

    def times(self, op):
        return self.stats().get("operations", {}).get(op, {}).get("times_ms", [])

    def total_calls(self):
        ops = self.stats().get("operations", {})
        return sum(v.get("calls", 0) for v in ops.values())

    def faults(self, spec):
        r = requests.post(self.base + "/_sim/faults", json=spec, timeout=10)
        assert r.status_code in (200, 201, 204), r.text
        return r

    def limits(self, spec):
        r = requests.post(self.base + "/_sim/limits", json=spec, timeout=10)
        assert r.status_code in (200, 201, 204), r.text
        return r

    def reset(self):
        r = requests.post(self.base + "/_sim/reset", timeout=10)
        assert r.status_code in (200, 201, 204), r.text

    def soap(self, body):
        return requests.post(self.endpoint, data=body.encode(),
                             headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=10)

    def stop(self):
        _stop(self.proc, signal.SIGKILL)
        self.log.close()
        self.tmp.cleanup()


class Gateway:
    """A running marketo-gateway with a requests session that carries the API key."""

    def __init__(self, endpoint, settings=None, env=None):
        _need(GATEWAY_BIN)
        self.tmp = tempfile.TemporaryDirectory(prefix="leads-gw-")
        conf = {
            "marketo": {"soap_endpoint": endpoint, "user_id": USER_ID,
                        "encryption_key": ENC_KEY},
            "gateway": {"listen": "127.0.0.1:0", "threads": "4"},
            "auth": {"api_keys": API_KEY},
        }
        for dotted, value in (settings or {}).items():
            section, key = dotted.split(".", 1)
            conf.setdefault(section, {})[key] = str(value)
        self.ini = os.path.join(self.tmp.name, "gateway.ini")
        with open(self.ini, "w") as f:
            for section, kv in conf.items():
                f.write("[%s]\n" % section)
                for k, v in kv.items():
                    f.write("%s = %s\n" % (k, v))
        penv = {k: v for k, v in os.environ.items()
                if not k.startswith(("MARKETO_", "GATEWAY_", "AUTH_", "CURSOR_", "REDIS_",
                                     "CACHE_", "RATELIMIT_", "CORS_"))}
        penv.update(env or {})
        self.log_path = os.path.join(self.tmp.name, "gateway.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([GATEWAY_BIN, "--config", self.ini], stdout=subprocess.PIPE,
                                     stderr=self.log, stdin=subprocess.DEVNULL,
                                     cwd=self.tmp.name, env=penv)
        try:
            self.port = _read_port(self.proc, "marketo-gateway listening on")
        except Exception:
            self.stop()
            raise
        _drain(self.proc.stdout)
        self.base = "http://127.0.0.1:%d" % self.port
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = API_KEY

    def get(self, path, params=None, headers=None, timeout=30):
        return self.session.get(self.base + path, params=params, headers=headers,
                                timeout=timeout)

    def get_raw(self, path_and_query, headers=None, timeout=30):
        """GET with the query string sent byte for byte (no re-encoding)."""
        req = requests.Request("GET", self.base + "/", headers=headers)
        prepared = self.session.prepare_request(req)
        prepared.url = self.base + path_and_query
        return self.session.send(prepared, timeout=timeout)

    def post(self, path, json_body=None, data=None, headers=None, timeout=60):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        if json_body is not None:
            data = json.dumps(json_body)
        return self.session.post(self.base + path, data=data, headers=h, timeout=timeout)

    def leads(self, headers=None, timeout=30, **params):
        return self.get("/leads", params=params, headers=headers, timeout=timeout)

    def alive(self):
        return self.proc.poll() is None

    def log_text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM):
        """Stops the process; returns what it wrote on stderr."""
        _stop(self.proc, sig)
        self.session.close()
        self.log.close()
        text = self.log_text_closed()
        self.tmp.cleanup()
        return text

    def log_text_closed(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


@pytest.fixture(scope="session")
def sim():
    s = Sim()
    yield s
    s.stop()


@pytest.fixture
def fresh_sim(sim):
    """The shared sim with faults cleared and stats zeroed, before and after the test."""
    sim.reset()
    yield sim
    sim.reset()


@pytest.fixture
def sim_factory():
    started = []

    def make(**kw):
        s = Sim(**kw)
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


@pytest.fixture
def gateway_factory():
    started = []

    def make(endpoint, settings=None, env=None):
        g = Gateway(endpoint, settings, env)
        started.append(g)
        return g
    yield make
    reports = []
    for g in started:
        # SIGTERM, so that a sanitizer build gets to print its leak report
        text = g.stop(signal.SIGTERM)
        for marker in SANITIZER_MARKERS:
            if marker in text:
                i = text.index(marker)
                reports.append(text[max(0, i - 200):i + 3000])
                break
    if reports:
        pytest.fail("sanitizer report from marketo-gateway:\n" + "\n----\n".join(reports))


@pytest.fixture
def gw(fresh_sim, gateway_factory):
    return gateway_factory(fresh_sim.endpoint)
