"""End-to-end fixtures: a real marketo-sim and a real marketo-gateway on loopback.

Binaries come from GATEWAY_BIN and SIM_BIN (defaults: build/gateway/marketo-gateway
and build/sim/marketo-sim under the repository). Both listen on 127.0.0.1 port 0;
the real port is read from their "listening on" stdout line. Processes are
started and stopped by tests/pylib/mgw_harness.py: every one is stopped with
SIGTERM at teardown, and the fixture fails when its stderr holds a sanitizer
report (or it did not exit cleanly).

One sim with 2,500 generated leads serves the whole session (`sim`); tests that
need it clean get `fresh_sim` (faults cleared and stats reset through /_sim/reset).
`gateway_factory` starts gateways with per-test settings; `gw` is one with the
defaults pointed at the shared sim.
"""
import json
import os
import sys

import pytest
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import mgw_harness as harness  # noqa: E402

ROOT = harness.ROOT
GATEWAY_BIN = harness.GATEWAY_BIN
SIM_BIN = harness.SIM_BIN
USER_ID = "bigcorp1_461839624B16E06BA2D663"
ENC_KEY = "899756834129871744AAEE88DDCC77CDEEDEC1AAAD66"
API_KEY = "test-key"
SIM_LEADS = 2500
SANITIZER_MARKERS = harness.SANITIZER_MARKERS


def _need(path):
    if not os.path.exists(path):
        pytest.skip("binary not built: %s" % path)


def _stop_all(procs, what):
    """Stops every process; fails the test when one of them ended badly."""
    problems = harness.stop_all(procs)
    if problems:
        pytest.fail("%s:\n%s" % (what, "\n----\n".join(problems)), pytrace=False)


class Sim(harness.Sim):
    """A running marketo-sim and its admin API."""

    def __init__(self, leads=SIM_LEADS, latency_ms=None, extra=()):
        _need(SIM_BIN)
        super().__init__(USER_ID, ENC_KEY, leads=leads, latency_ms=latency_ms, extra=extra,
                         tmp_prefix="leads-sim-")


class Gateway(harness.Gateway):
    """A running marketo-gateway with a requests session that carries the API key."""

    def __init__(self, endpoint, settings=None, env=None):
        _need(GATEWAY_BIN)
        conf = {"marketo.soap_endpoint": endpoint, "marketo.user_id": USER_ID,
                "marketo.encryption_key": ENC_KEY, "gateway.listen": "127.0.0.1:0",
                "gateway.threads": "4", "auth.api_keys": API_KEY}
        conf.update(settings or {})
        super().__init__(conf, env=env, tmp_prefix="leads-gw-")
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

    def stop(self, *args, **kw):
        self.session.close()
        return super().stop(*args, **kw)


@pytest.fixture(scope="session")
def sim():
    s = Sim()
    yield s
    _stop_all([s], "the session's marketo-sim")


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
    _stop_all(started, "marketo-sim started by sim_factory")


@pytest.fixture
def gateway_factory():
    started = []

    def make(endpoint, settings=None, env=None):
        g = Gateway(endpoint, settings, env)
        started.append(g)
        return g
    yield make
    _stop_all(started, "marketo-gateway started by gateway_factory")


@pytest.fixture
def gw(fresh_sim, gateway_factory):
    return gateway_factory(fresh_sim.endpoint)
