"""Fixtures for the Redis end-to-end tests: one redis-server, one marketo-sim and
several marketo-gateway replicas sharing that Redis, all on 127.0.0.1.

Binaries: GATEWAY_BIN, SIM_BIN (defaults under build/), REDIS_SERVER
(default: redis-server on PATH, else /usr/bin/redis-server). Every port is 0 or
a port the kernel just handed out. Processes are started and stopped by
tests/pylib/mgw_harness.py: at teardown each one gets SIGTERM, and the fixture
fails when a gateway's or the sim's stderr holds a sanitizer report (or one
did not exit cleanly). A replica a test kills on purpose (`gws[0].kill()`) is
exempt from the clean-exit check, and so is a redis-server killed by
`redis.kill()`.
"""
import os
import sys

import pytest
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import mgw_harness as harness  # noqa: E402

ROOT = harness.ROOT
GATEWAY_BIN = harness.GATEWAY_BIN
SIM_BIN = harness.SIM_BIN
REDIS_SERVER = harness.REDIS_SERVER
USER_ID = "redis_e2e_user_0123456789"
ENC_KEY = "redis-e2e-encryption-key-0123456789abcdef"
API_KEY = "k"
SIM_LEADS = 3000


def _need(path):
    if not os.path.exists(path):
        pytest.skip("not available: %s" % path)


def _stop_all(procs, what):
    """Stops every process; fails the test when one of them ended badly."""
    problems = harness.stop_all(procs)
    if problems:
        pytest.fail("%s:\n%s" % (what, "\n----\n".join(problems)), pytrace=False)


class Redis(harness.Redis):
    """A redis-server without persistence; can be killed and restarted on its port."""

    def __init__(self):
        _need(REDIS_SERVER)
        super().__init__(tmp_prefix="redis-e2e-")


class Sim(harness.Sim):
    """A running marketo-sim and its admin API."""

    def __init__(self, leads=SIM_LEADS):
        _need(SIM_BIN)
        super().__init__(USER_ID, ENC_KEY, leads=leads, tmp_prefix="redis-e2e-sim-")

    def times(self, name="getMultipleLeads"):
        return sorted(super().times(name))


class Gateway(harness.Gateway):
    """A running marketo-gateway replica using the shared Redis."""

    def __init__(self, sim, redis, settings=None):
        _need(GATEWAY_BIN)
        conf = {"marketo.soap_endpoint": sim.endpoint, "marketo.user_id": USER_ID,
                "marketo.encryption_key": ENC_KEY, "gateway.listen": "127.0.0.1:0",
                "gateway.threads": "4", "auth.api_keys": API_KEY,
                "redis.url": redis.url, "cursor.secret": "s"}
        conf.update(settings or {})
        super().__init__(conf, tmp_prefix="redis-e2e-gw-")
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

    def stop(self, *args, **kw):
        self.session.close()
        return super().stop(*args, **kw)


@pytest.fixture
def redis():
    r = Redis()
    yield r
    _stop_all([r], "redis-server")


@pytest.fixture(scope="module")
def shared_sim():
    s = Sim()
    yield s
    _stop_all([s], "the module's marketo-sim")


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
        new = []
        for _ in range(n):
            new.append(Gateway(sim, redis, settings))
            started.append(new[-1])
        return new

    yield make
    _stop_all(started, "marketo-gateway replicas")
