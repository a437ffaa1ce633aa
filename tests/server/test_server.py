"""Black-box tests of the gateway's HTTP face (gateway/http/server.c and the files
beside it, ops.c, main.c).

Run: /usr/bin/python3 -m pytest tests/server   (scripts/test.sh does)
Binary: GATEWAY_BIN (default build/gateway/marketo-gateway under the repository).

Each test starts marketo-gateway on 127.0.0.1 port 0 with a temporary INI
file, reads the real port from its "marketo-gateway listening on HOST:PORT"
stdout line, and stops it at teardown with SIGTERM (tests/pylib/mgw_harness.py;
a sanitizer report in its stderr fails the test). No
marketo-sim is needed: these routes never reach Marketo, and the /leads
routes are only checked up to the server's own answers (auth, 503 without an
upstream, 404/405, 413, CORS). The upstream, when one is configured, is a
closed loopback port.
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import mgw_harness as harness  # noqa: E402

ROOT = harness.ROOT
GATEWAY_BIN = harness.GATEWAY_BIN
KEY1 = "srv-test-key-0123456789"
KEY2 = "second-key-abcdef"
WRONG = "not-the-key"
ORIGIN = "https://app.example.com"
DEAD_ENDPOINT = "http://127.0.0.1:9/soap/mktows/2_3"  # discard port: nothing listens
HEX32 = re.compile(r"^[0-9a-f]{32}$")
# One exposition line: a comment, or name{labels} value.
METRIC_LINE = re.compile(
    r'^(#.*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
    r'(-?[0-9.eE+-]+|NaN|[+-]Inf))$')

BASE_SETTINGS = {
    "gateway.listen": "127.0.0.1:0",
    "gateway.threads": "2",
    "gateway.max_body_bytes": "2048",
    "gateway.drain_timeout_ms": "1500",
    "auth.api_keys": "%s, %s" % (KEY1, KEY2),
    "cors.allowed_origins": "%s, https://other.example.org" % ORIGIN,
    "cursor.secret": "cursor-secret-for-tests",
}


def _need_binary():
    if not os.path.exists(GATEWAY_BIN):
        pytest.skip("binary not built: %s" % GATEWAY_BIN)


def _clean_env(extra=None):
    return harness.child_env(extra)


def _write_ini(path, settings):
    harness.write_ini(path, settings)


class Gateway(harness.Gateway):
    """A running marketo-gateway, its port and its captured stderr (tests/pylib/mgw_harness.py)."""

    def __init__(self, settings, env=None):
        _need_binary()
        super().__init__(settings, env=env, binary=GATEWAY_BIN, tmp_prefix="server-gw-",
                         log_name="stderr.log")

    def url(self, path):
        return self.base + path

    def get(self, path, **kw):
        kw.setdefault("timeout", 10)
        return requests.get(self.url(path), **kw)

    def stderr_text(self):
        return self.log_text()

    def log_lines(self):
        return [json.loads(line) for line in self.stderr_text().splitlines() if line.strip()]

    def terminate(self, timeout=10):
        """SIGTERM and wait; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def start():
    """Factory: start(overrides) -> Gateway. At teardown every gateway gets SIGTERM
    and the test fails on a sanitizer report, a gateway that did not stop within
    10 s, or an exit status other than 0."""
    started = []

    def make(overrides=None, env=None):
        settings = dict(BASE_SETTINGS)
        settings.update(overrides or {})
        g = Gateway(settings, env)
        started.append(g)
        return g
    yield make
    problems = harness.stop_all(started)
    if problems:
        pytest.fail("\n----\n".join(problems), pytrace=False)


@pytest.fixture
def gw(start):
    """A gateway without marketo.soap_endpoint (the lead routes answer 503)."""
    return start()


@pytest.fixture
def gw_up(start):
    """A gateway with an upstream configured (a closed loopback port)."""
    return start({"marketo.soap_endpoint": DEAD_ENDPOINT, "marketo.user_id": "u1",
                  "marketo.encryption_key": "enc-key-secret-xyz", "marketo.timeout_ms": "1000"})


def raw_request(port, data, timeout=10.0):
    """Sends raw bytes, returns (status, headers dict lower-cased, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
            if b"\r\n\r\n" in buf:
                head, _, body = buf.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
    finally:
        s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def route_table():
    """(pattern, method) pairs of the route table (gateway/http/routes.c)."""
    with open(os.path.join(ROOT, "gateway", "http", "routes.c")) as f:
        src = f.read()
    block = src[src.index("/* ROUTES-BEGIN */"):src.index("/* ROUTES-END */")]
    routes = re.findall(r'\{"(/[^"]*)",\s*"([A-Z]+)"', block)
    assert len(routes) >= 7
    return routes


def assert_problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status
    assert body["type"] == "about:blank" or body["type"].startswith("urn:marketo-gateway:problem:")
    assert isinstance(body["title"], str) and body["title"]
    assert body["request_id"] == r.headers["X-Request-ID"]
    return body


# --------------------------------------------------------------- command line

def test_version():
    _need_binary()
    p = subprocess.run([GATEWAY_BIN, "--version"], capture_output=True, text=True, timeout=10,
                       env=_clean_env())
    assert p.returncode == 0
    assert re.match(r"^marketo-gateway \d+\.\d+\.\d+", p.stdout), p.stdout


def test_check_config_masks_secrets(tmp_path):
    _need_binary()
    ini = tmp_path / "g.ini"
    settings = dict(BASE_SETTINGS)
    settings.update({"marketo.soap_endpoint": DEAD_ENDPOINT, "marketo.user_id": "user-visible",
                     "marketo.encryption_key": "enc-key-secret-xyz"})
    _write_ini(str(ini), settings)
    p = subprocess.run([GATEWAY_BIN, "--config", str(ini), "--check-config"],
                       capture_output=True, text=True, timeout=10, env=_clean_env())
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    for secret in (KEY1, KEY2, "enc-key-secret-xyz", "cursor-secret-for-tests"):
        assert secret not in out
    assert "****" in p.stdout
    assert "user-visible" in p.stdout


def test_bad_config_exits_nonzero(tmp_path):
    _need_binary()
    ini = tmp_path / "g.ini"
    ini.write_text("[gateway]\nlisten = 127.0.0.1:0\n[auth]\napi_keys =\n")
    p = subprocess.run([GATEWAY_BIN, "--config", str(ini)], capture_output=True, text=True,
                       timeout=10, env=_clean_env())
    assert p.returncode != 0
    assert "listening" not in p.stdout


def test_listening_line_and_log(gw):
    assert gw.host == "127.0.0.1"
    assert gw.port > 0
    listening = [l for l in gw.log_lines() if l.get("msg") == "listening"]
    assert listening and listening[0]["port"] == gw.port


def _ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_listen(start):
    g = start({"gateway.listen": "[::1]:0"})
    assert g.host == "[::1]"
    r = requests.get("http://[::1]:%d/healthz" % g.port, timeout=10)
    assert r.status_code == 200


# -------------------------------------------------------------- ops routes

def test_healthz(gw):
    r = gw.get("/healthz")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"status": "ok"}
    assert HEX32.match(r.headers["X-Request-ID"])


def test_head_healthz_has_no_body(gw):
    r = requests.head(gw.url("/healthz"), timeout=10)
    assert r.status_code == 200
    assert r.content == b""


def test_readyz_503_without_endpoint(gw):
    body = assert_problem(gw.get("/readyz"), 503)
    assert "not configured" in body["detail"]


def test_readyz_200_with_endpoint(gw_up):
    r = gw_up.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready"}


def test_metrics_text_parses(gw):
    for path in ("/healthz", "/nope", "/readyz"):
        gw.get(path)
    r = gw.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert "version=0.0.4" in r.headers["Content-Type"]
    lines = r.text.splitlines()
    assert lines
    bad = [l for l in lines if not METRIC_LINE.match(l)]
    assert not bad, bad[:5]
    text = r.text
    assert re.search(r'^http_requests_total\{route="/healthz",method="GET",status="200"\} [1-9]',
                     text, re.M), text[:2000]
    assert re.search(r'^http_requests_total\{route="unmatched",method="GET",status="404"\} 1', text, re.M)
    assert "http_request_duration_seconds_bucket{" in text
    assert re.search(r"^http_requests_in_flight 1$", text, re.M)  # this very request
    assert re.search(r'^gateway_build_info\{version="[^"]+"\} 1$', text, re.M)
    for secret in (KEY1, KEY2, "cursor-secret-for-tests"):
        assert secret not in text


def test_metrics_on_its_own_port(start):
    """gateway.metrics_listen: GET /metrics there (and only there); the API
    port answers /metrics 404, so the metrics port can stay internal."""
    g = start({"gateway.metrics_listen": "127.0.0.1:0"})
    lines = [l for l in g.log_lines() if l.get("msg") == "metrics listening"]
    assert lines and lines[0]["port"] > 0 and lines[0]["port"] != g.port
    assert "marketo-gateway metrics on 127.0.0.1:%d" % lines[0]["port"] in g.stdout_lines
    mbase = "http://127.0.0.1:%d" % lines[0]["port"]
    g.get("/healthz")
    # counted at completion, just after the reply went out: wait for it
    healthz_line = r'^http_requests_total\{route="/healthz",method="GET",status="200"\} 1$'
    harness.metrics_when(lambda: requests.get(mbase + "/metrics", timeout=10), healthz_line)
    r = requests.get(mbase + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain") and "version=0.0.4" in r.headers["Content-Type"]
    assert not [l for l in r.text.splitlines() if not METRIC_LINE.match(l)]
    assert re.search(healthz_line, r.text, re.M)
    assert re.search(r'^gateway_build_info\{version="[^"]+"\} 1$', r.text, re.M)
    assert requests.head(mbase + "/metrics", timeout=10).status_code == 200
    body = assert_problem(g.get("/metrics"), 404)
    assert "metrics_listen" in body["detail"]
    assert requests.get(mbase + "/healthz", timeout=10).status_code == 404
    r = requests.post(mbase + "/metrics", data=b"x", timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    assert g.get("/healthz").status_code == 200


def test_metrics_upstream_gauges(gw_up):
    text = gw_up.get("/metrics").text
    assert re.search(r"^gateway_upstream_queued_jobs \d+$", text, re.M)
    assert re.search(r"^gateway_upstream_in_flight_calls \d+$", text, re.M)


def test_openapi_documents_every_route(gw):
    r = gw.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    with open(os.path.join(ROOT, "gateway", "http", "openapi.json")) as f:
        assert json.load(f) == doc, "the embedded document is the source file"
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for pattern, method in route_table():
        assert pattern in paths, pattern
        assert method.lower() in paths[pattern], (pattern, method)
    # security: ops routes open, lead routes keyed
    for p in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert paths[p]["get"]["security"] == []
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["apiKeyAuth"]["name"] == "X-API-Key"
    names = {p.get("name") for p in doc["components"]["parameters"].values()}
    for n in ("email", "id", "cookie", "leadOwnerEmail", "sfdcAccountId", "sfdcContactId",
              "sfdcLeadId", "sfdcLeadOwnerId", "sfdcOpptyId", "staticList", "staticListId",
              "updatedSince", "updatedUntil", "fields", "limit", "cursor"):
        assert n in names, n
    # every $ref resolves
    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    target = doc
                    for part in v.lstrip("#/").split("/"):
                        target = target[part]
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(doc)


def test_every_documented_path_answers(gw):
    # gw has no marketo.soap_endpoint: every route that needs Marketo answers
    # screen.c's 503 "upstream-not-configured" problem (after auth, before its
    # handler); the operations routes answer their own bodies (ops.c).
    doc = gw.get("/openapi.json").json()
    seen = set()
    for path, item in doc["paths"].items():
        concrete = path.replace("{id}", "1")
        for method in item:
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            r = requests.request(method.upper(), gw.url(concrete), timeout=10,
                                 headers={"X-API-Key": KEY1}, json={} if method == "post" else None)
            assert r.status_code != 404, (method, path, r.text)
            assert r.status_code != 405, (method, path, r.text)
            seen.add((method, path))
            if path == "/healthz":
                assert r.status_code == 200, r.text
                assert r.json() == {"status": "ok"}
            elif path == "/readyz":
                body = assert_problem(r, 503)
                assert body["type"] == "urn:marketo-gateway:problem:upstream-not-configured"
                assert body["title"] == "Not ready"
                assert body["detail"] == "upstream not configured (marketo.soap_endpoint)"
            elif path == "/metrics":
                assert r.status_code == 200, r.text
                assert r.headers["Content-Type"].startswith("text/plain")
                assert re.search(r'^gateway_upstream_configured 0$', r.text, re.M), r.text[:2000]
            elif path == "/openapi.json":
                assert r.status_code == 200, r.text
                assert r.json() == doc
            else:
                body = assert_problem(r, 503)
                assert body == {
                    "type": "urn:marketo-gateway:problem:upstream-not-configured",
                    "title": "Upstream not configured", "status": 503,
                    "detail": "marketo.soap_endpoint is not set",
                    "request_id": r.headers["X-Request-ID"]}, (method, path, body)
    assert {("get", "/leads"), ("get", "/leads/{id}"), ("post", "/leads/sync")} <= seen


# ------------------------------------------------------------------- auth

LEAD_ROUTES = [("GET", "/leads?email=a@example.com"), ("GET", "/leads/5"), ("POST", "/leads/sync")]


@pytest.mark.parametrize("method,path", LEAD_ROUTES)
def test_auth_missing_key_is_401(gw, method, path):
    r = requests.request(method, gw.url(path), timeout=10)
    body = assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "detail" in body


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer " + WRONG},
    {"X-API-Key": WRONG},
    {"Authorization": "Bearer " + KEY1 + "x"},
    {"Authorization": "Bearer " + KEY1[:-1]},
    {"Authorization": "Basic " + KEY1},
    {"Authorization": KEY1},
    {"X-API-Key": ""},
])
def test_auth_wrong_key_is_401(gw, headers):
    assert_problem(gw.get("/leads?email=a@example.com", headers=headers), 401)


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer " + KEY1},
    {"Authorization": "bearer " + KEY2},
    {"X-API-Key": KEY1},
    {"X-API-Key": KEY2},
])
def test_auth_right_key_passes(gw, headers):
    # Past auth, a gateway without an upstream answers 503 "not configured".
    body = assert_problem(gw.get("/leads?email=a@example.com", headers=headers), 503)
    assert body["type"].endswith("upstream-not-configured")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_ops_routes_need_no_key(gw_up, path):
    assert gw_up.get(path).status_code == 200


def test_auth_disabled_without_keys(start):
    g = start({"auth.api_keys": "", "auth.disabled": "true"})
    body = assert_problem(g.get("/leads?email=a@example.com"), 503)
    assert body["type"].endswith("upstream-not-configured")
    warns = [l for l in g.log_lines() if l.get("level") == "warn"
             and "authentication is disabled" in l.get("msg", "")]
    assert warns, g.stderr_text()


def test_logs_hold_no_key_and_no_query(gw_up):
    gw_up.get("/leads?email=secret.person@example.com", headers={"X-API-Key": KEY1})
    gw_up.get("/leads?email=secret.person@example.com", headers={"Authorization": "Bearer " + KEY2})
    gw_up.get("/leads/77", headers={"X-API-Key": WRONG})
    gw_up.get("/healthz?token=" + KEY1)
    time.sleep(0.2)
    text = gw_up.stderr_text()
    for s in (KEY1, KEY2, WRONG, "secret.person", "enc-key-secret-xyz", "cursor-secret-for-tests"):
        assert s not in text, s
    lines = gw_up.log_lines()  # every line is JSON
    reqs = [l for l in lines if l.get("msg") == "request"]
    assert len(reqs) >= 4
    for l in reqs:
        for field in ("request_id", "method", "route", "status", "duration_ms",
                      "upstream_calls", "bytes"):
            assert field in l, (field, l)
    assert {"/leads", "/leads/{id}", "/healthz"} <= {l["route"] for l in reqs}


# ------------------------------------------------------------ request ids

def test_request_id_echoed(gw):
    for rid in ("abc", "req-1.2:3_x", "A" * 128):
        r = gw.get("/healthz", headers={"X-Request-ID": rid})
        assert r.headers["X-Request-ID"] == rid


@pytest.mark.parametrize("rid", ["A" * 129, "x" * 500, "has space", "<script>", "a;b", "é"])
def test_request_id_replaced(gw, rid):
    r = gw.get("/healthz", headers={"X-Request-ID": rid.encode("utf-8")})
    assert HEX32.match(r.headers["X-Request-ID"]), r.headers["X-Request-ID"]


def test_request_id_with_cr_lf_never_reflected(gw):
    # A bare CR inside the value: the value is invalid and replaced.
    status, headers, body = raw_request(
        gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: ab\rInjected: 1"
        b"\r\nConnection: close\r\n\r\n")
    assert "injected" not in headers
    assert b"Injected" not in body and b"ab\r" not in body
    if status == 200:
        assert HEX32.match(headers["x-request-id"]), headers
        assert json.loads(body) == {"status": "ok"}
    else:
        # libmicrohttpd refuses the malformed header block itself (400, its
        # own HTML page): neither the value nor the injected name comes back.
        assert status == 400, (status, headers, body)
    # CRLF ends the header: the id is "ab" and "Injected" is a request header
    # of its own, never a response header.
    status, headers, body = raw_request(
        gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: ab\r\nInjected: 1"
        b"\r\nConnection: close\r\n\r\n")
    assert status == 200
    assert "injected" not in headers
    assert headers["x-request-id"] == "ab"
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"status": "ok"}


def test_problem_carries_request_id(gw):
    r = gw.get("/nope", headers={"X-Request-ID": "trace-42"})
    body = assert_problem(r, 404)
    assert body["request_id"] == "trace-42"


def test_generated_ids_differ(gw):
    ids = {gw.get("/healthz").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5


# ------------------------------------------------------------------- CORS

def test_cors_preflight_allowed_origin(gw):
    r = requests.options(gw.url("/leads"), timeout=10, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, x-request-id"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "GET" in r.headers["Access-Control-Allow-Methods"]
    allow_h = r.headers["Access-Control-Allow-Headers"].lower()
    for h in ("authorization", "x-api-key", "content-type", "x-request-id", "cache-control"):
        assert h in allow_h
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in r.headers["Vary"]
    assert r.headers["X-Request-ID"]
    r = requests.options(gw.url("/leads/sync"), timeout=10, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    assert "POST" in r.headers["Access-Control-Allow-Methods"]


def test_cors_preflight_disallowed_origin(gw):
    r = requests.options(gw.url("/leads"), timeout=10, headers={
        "Origin": "https://evil.example.net", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 204
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Access-Control-Allow-Methods" not in r.headers


def test_cors_simple_request_headers(gw):
    r = gw.get("/healthz", headers={"Origin": "https://other.example.org"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://other.example.org"
    assert "Origin" in r.headers["Vary"]
    expose = r.headers["Access-Control-Expose-Headers"]
    for h in ("X-Request-ID", "X-Cache", "Retry-After"):
        assert h in expose
    # errors too, so that a browser can read them
    r = gw.get("/leads", headers={"Origin": ORIGIN})
    assert r.status_code == 401
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    r = gw.get("/healthz", headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = gw.get("/healthz")
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_wildcard(start):
    g = start({"cors.allowed_origins": "*"})
    r = g.get("/healthz", headers={"Origin": "https://anything.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    r = requests.options(g.url("/leads"), timeout=10, headers={
        "Origin": "https://anything.example", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_no_cors_configured(start):
    g = start({"cors.allowed_origins": ""})
    r = g.get("/healthz", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in r.headers


# ---------------------------------------------------------- 404 / 405 / 413

@pytest.mark.parametrize("path", ["/nope", "/leads/", "/leads/1/2", "/healthz/x", "/"])
def test_unknown_path_404(gw, path):
    assert_problem(gw.get(path, headers={"X-API-Key": KEY1}), 404)


@pytest.mark.parametrize("path", ["/healthz%00", "/leads/5%00", "/leads/5%0d%0aX:1"])
def test_control_characters_in_path_400(gw, path):
    r = gw.get(path, headers={"X-API-Key": KEY1})
    assert_problem(r, 400)


def test_nul_in_query_is_not_truncated(gw_up):
    # %00 must not cut a value short ("a%00b@x.com" read as "a"): the lead
    # routes see a control character and refuse it before any upstream call.
    r = gw_up.get("/leads?email=a%00b@x.com", headers={"X-API-Key": KEY1})
    assert_problem(r, 400)


@pytest.mark.parametrize("method,path,allow", [
    ("POST", "/healthz", "GET"), ("DELETE", "/leads", "GET"), ("PUT", "/leads/5", "GET"),
    ("GET", "/leads/sync", "POST"), ("POST", "/metrics", "GET"),
])
def test_wrong_method_405(gw, method, path, allow):
    r = requests.request(method, gw.url(path), timeout=10, headers={"X-API-Key": KEY1})
    assert_problem(r, 405)
    allowed = [m.strip() for m in r.headers["Allow"].split(",")]
    assert allow in allowed
    assert method not in allowed


def test_body_over_cap_by_content_length(gw):
    status, headers, body = raw_request(
        gw.port, b"POST /leads/sync HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY1.encode() +
        b"\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{\"leads\":")
    assert status == 413
    assert headers["content-type"].startswith("application/problem+json")
    doc = json.loads(body)
    assert doc["status"] == 413 and doc["request_id"] == headers["x-request-id"]


def test_body_over_cap_chunked(gw_up):
    # An upstream is configured: without one the answer is 503 from the
    # headers, before the body.
    def chunks():
        for _ in range(8):
            yield b"x" * 1000
    r = requests.post(gw_up.url("/leads/sync"), data=chunks(), timeout=10,
                      headers={"X-API-Key": KEY1, "Content-Type": "application/json"})
    assert_problem(r, 413)
    # the server is still fine afterwards
    assert gw_up.get("/healthz").status_code == 200


def test_body_at_cap_is_accepted(gw_up):
    # A body of exactly gateway.max_body_bytes (2048) is read whole and parsed
    # (gw_up has an upstream: without one the answer is 503 from the headers,
    # before the body). It is not JSON past its opening: the sync parser's 400
    # (leadjson.c) points at its very end, so all of it was read; one byte
    # more is 413 from the Content-Length.
    body = b'{"leads":[' + b" " * 2037 + b"x"
    assert len(body) == 2048
    r = requests.post(gw_up.url("/leads/sync"), data=body, timeout=10,
                      headers={"X-API-Key": KEY1, "Content-Type": "application/json"})
    problem = assert_problem(r, 400)
    assert problem["type"] == "urn:marketo-gateway:problem:invalid-request", problem
    m = re.match(r"^request body is not valid JSON \(line 1, column (\d+)\)$", problem["detail"])
    assert m and int(m.group(1)) >= 2048, problem
    r = requests.post(gw_up.url("/leads/sync"), data=body + b" ", timeout=10,
                      headers={"X-API-Key": KEY1, "Content-Type": "application/json"})
    problem = assert_problem(r, 413)
    assert problem["type"] == "urn:marketo-gateway:problem:body-too-large", problem
    assert problem["detail"] == "the request body exceeds 2048 bytes"


# ------------------------------------------------------------- shutdown

def test_sigterm_idle_exits_zero(gw_up):
    t0 = time.monotonic()
    assert gw_up.terminate(timeout=10) == 0
    assert time.monotonic() - t0 < 1.5
    msgs = [l.get("msg") for l in gw_up.log_lines()]
    assert "draining" in msgs and "stopped" in msgs


def test_sigint_exits_zero(gw):
    gw.proc.send_signal(signal.SIGINT)
    assert gw.proc.wait(timeout=10) == 0


def test_drain_readyz_503_then_exit_within_timeout(gw_up):
    # a keep-alive connection opened before the signal, to watch /readyz on
    probe = http.client.HTTPConnection("127.0.0.1", gw_up.port, timeout=10)
    probe.request("GET", "/readyz")
    first = probe.getresponse()
    first.read()
    assert first.status == 200
    # another one, idle from before the signal until a late request
    idle = http.client.HTTPConnection("127.0.0.1", gw_up.port, timeout=10)
    idle.request("GET", "/healthz")
    warm = idle.getresponse()
    warm.read()
    assert warm.status == 200
    # a request still in progress: its body never finishes arriving
    slow = socket.create_connection(("127.0.0.1", gw_up.port), timeout=10)
    slow.sendall(b"POST /leads/sync HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY1.encode() +
                 b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"lea")
    time.sleep(0.3)
    t0 = time.monotonic()
    gw_up.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    probe.request("GET", "/readyz")
    ready = probe.getresponse()
    body = json.loads(ready.read())
    assert ready.status == 503
    assert ready.getheader("Content-Type").startswith("application/problem+json")
    assert "draining" in body["detail"]
    # a request that starts during the drain, on a connection opened before,
    # is answered at once: a lead route 503 shutting-down with Retry-After
    idle.request("GET", "/leads?email=a@example.com", headers={"X-API-Key": KEY1})
    late = idle.getresponse()
    body = json.loads(late.read())
    assert late.status == 503 and body["type"].endswith("shutting-down"), body
    assert late.getheader("Retry-After") == "1"
    assert (late.getheader("Connection") or "").lower() == "close"
    # a new connection during the drain is answered, not refused: the
    # operations routes as usual, with Connection: close
    h = requests.get(gw_up.url("/healthz"), timeout=2)
    assert h.status_code == 200 and h.json() == {"status": "ok"}
    assert h.headers.get("Connection", "").lower() == "close"
    rz = requests.get(gw_up.url("/readyz"), timeout=2)
    assert rz.status_code == 503 and rz.json()["type"].endswith("draining")
    code = gw_up.proc.wait(timeout=10)
    elapsed = time.monotonic() - t0
    slow.close()
    probe.close()
    idle.close()
    assert code == 0
    assert 1.0 <= elapsed < 1.5 + 1.0, elapsed  # waited for the slow request, not forever


def test_in_flight_gauge_drops_back(gw_up):
    # A request whose body is still arriving: it has passed every check the
    # headers allow (key, JSON, upstream), so it is in flight and holds its
    # Content-Length of the body budget.
    gw = gw_up

    def slow_upload(port, stop):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /leads/sync HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY1.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\nab")
        stop.wait(5)
        s.close()
    stop = threading.Event()
    t = threading.Thread(target=slow_upload, args=(gw.port, stop))
    t.start()
    try:
        time.sleep(0.3)
        text = gw.get("/metrics").text
        assert re.search(r"^http_requests_in_flight 2$", text, re.M), text[:500]
        assert re.search(r"^http_request_body_bytes 10$", text, re.M), text[:1500]
    finally:
        stop.set()
        t.join()
    time.sleep(0.3)
    text = gw.get("/metrics").text
    assert re.search(r"^http_requests_in_flight 1$", text, re.M)
    assert re.search(r"^http_request_body_bytes 0$", text, re.M)
