"""Fixtures for the Redis end-to-end tests: one redis-server, one marketo-sim and
several marketo-gateway replicas sharing that Redis, all on 127.0.0.1.

Binaries: GATEWAY_BIN, SIM_BIN (defaults under build/), REDIS_SERVER
(default /usr/bin/redis-server). Every port is 0 or a port the kernel just
handed out; every process started here is killed at teardown.
"""
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from mgw_procs import drain as _drain, read_port as _read_port, stop as _stop_proc  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GATEWAY_BIN = os.path.abspath(os.environ.get(
    "GATEWAY_BIN", os.path.join(ROOT, "build", "gateway", "marketo-gateway")))
SIM_BIN = os.path.abspath(os.environ.get(
    "SIM_BIN", os.path.join(ROOT, "build", "sim", "marketo-sim")))
REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")
USER_ID = "redis_e2e_user_0123456789"
ENC_KEY = "redis-e2e-encryption-key-0123456789abcdef"
API_KEY = "k"
SIM_LEADS = 3000
START_TIMEOUT = 15.0


def _need(path):
    if not os.path.exists(path):
        pytest.skip("not available: %s" % path)




def _kill(proc, sig=signal.SIGKILL):
    _stop_proc(proc, sig, 10.0)


def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Redis:
    """A redis-server without persistence; can be killed and restarted on its port."""

    def __init__(self):
        _need(REDIS_SERVER)
        self.tmp = tempfile.TemporaryDirectory(prefix="redis-e2e-")
        self.proc = None
        for _ in range(3):
            self.port = _free_port()
            if self.start():
                break
        else:
            raise RuntimeError("redis-server did not start")
        self.url = "redis://127.0.0.1:%d/0" % self.port

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

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.tmp.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.ping():
                return True
            time.sleep(0.05)
        _kill(self.proc)
        return False

    def kill(self):
        _kill(self.proc, signal.SIGKILL)

    def restart(self):
        self.kill()
        for _ in range(20):
            if self.start():
                return
            time.sleep(0.1)
        raise RuntimeError("redis-server did not restart")

    def stop(self):
        _kill(self.proc, signal.SIGKILL)
        self.tmp.cleanup()


class Sim:
    """A running marketo-sim and its admin API."""

    def __init__(self, leads=SIM_LEADS):
        _need(SIM_BIN)
        self.tmp = tempfile.TemporaryDirectory(prefix="redis-e2e-sim-")
        self.log = open(os.path.join(self.tmp.name, "sim.log"), "wb")
        self.proc = subprocess.Popen(
            [SIM_BIN, "--listen", "127.0.0.1:0", "--user-id", USER_ID,
             "--encryption-key", ENC_KEY, "--leads", str(leads)],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, cwd=self.tmp.name)
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

    def op(self, name):
        return self.stats().get("operations", {}).get(name, {})

    def calls(self, name="getMultipleLeads"):
        return self.op(name).get("calls", 0)

    def times(self, name="getMultipleLeads"):
        return sorted(self.op(name).get("times_ms", []))

    def reset(self):
        r = requests.post(self.base + "/_sim/reset", timeout=10)
        assert r.status_code in (200, 201, 204), r.text

    def faults(self, spec):
        r = requests.post(self.base + "/_sim/faults", json=spec, timeout=10)
        assert r.status_code in (200, 201, 204), r.text

    def limits(self, spec):
        r = requests.post(self.base + "/_sim/limits", json=spec, timeout=10)
        assert r.status_code in (200, 201, 204), r.text

    def clear_faults(self):
        self.faults({"operation": "*", "clear": True})

    def stop(self):
        _kill(self.proc)
        self.log.close()
        self.tmp.cleanup()


class Gateway:
    """A running marketo-gateway replica using the shared Redis."""

    def __init__(self, sim, redis, settings=None):
        _need(GATEWAY_BIN)
        self.tmp = tempfile.TemporaryDirectory(prefix="redis-e2e-gw-")
        conf = {
            "marketo": {"soap_endpoint": sim.endpoint, "user_id": USER_ID,
                        "encryption_key": ENC_KEY},
            "gateway": {"listen": "127.0.0.1:0", "threads": "4"},
            "auth": {"api_keys": API_KEY},
            "redis": {"url": redis.url},
            "cursor": {"secret": "s"},
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
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MARKETO_", "GATEWAY_", "AUTH_", "CURSOR_", "REDIS_",
                                    "CACHE_", "RATELIMIT_", "CORS_"))}
        self.log_path = os.path.join(self.tmp.name, "gateway.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([GATEWAY_BIN, "--config", self.ini],
                                     stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL, cwd=self.tmp.name, env=env)
        try:
            self.port = _read_port(self.proc, "marketo-gateway listening on")
        except Exception:
            self.stop()
            raise
        _drain(self.proc.stdout)
        self.base = "http://127.0.0.1:%d" % self.port
        self.session = requests.Session()
        self.session.headers["Authorization"] = "Bearer " + API_KEY

    def lookup(self, email, timeout=60, **params):
        params["email"] = email
        return self.session.get(self.base + "/leads", params=params, timeout=timeout)

    def sync(self, leads, timeout=60):
        return self.session.post(self.base + "/leads/sync", json={"leads": leads},
                                 timeout=timeout)

    def metrics(self):
        r = requests.get(self.base + "/metrics", timeout=10)
        r.raise_for_status()
        return r.text

    def metric(self, name):
        """Sum of every series of a metric (0 when absent)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
        return total

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def kill(self):
        _kill(self.proc, signal.SIGKILL)

    def stop(self):
        _kill(self.proc, signal.SIGKILL)
        self.log.close()
        self.tmp.cleanup()


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def shared_sim():
    s = Sim()
    yield s
    s.stop()


# Marketo's own limits, which the sim starts with.
MARKETO_LIMITS = {"calls_per_window": 100, "window_seconds": 20, "max_concurrent": 10,
                  "daily_quota": 10000}


@pytest.fixture
def sim(shared_sim):
    shared_sim.clear_faults()
    shared_sim.limits(MARKETO_LIMITS)
    shared_sim.reset()
    yield shared_sim
    shared_sim.clear_faults()
    shared_sim.limits(MARKETO_LIMITS)


@pytest.fixture
def gateways(sim, redis):
    """gateways(n, settings) -> n replicas on the same sim and Redis."""
    started = []

    def make(n, settings=None):
        new = [Gateway(sim, redis, settings) for _ in range(n)]
        started.extend(new)
        return new

    yield make
    for g in started:
        g.stop()
