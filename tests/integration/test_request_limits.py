"""What a request may cost before it is refused (issue 12, items 1, 4 and 11).

- A request the headers already condemn is answered from them, before its
  body is read: no API key (401), no such route (404), wrong method (405), a
  body on a route that takes none (413), a body that is not JSON (415).
  Connections announcing 8 MiB bodies cost their headers only: RSS stays
  flat.
- Request bodies held at once are bounded, all connections together
  (gateway.max_body_total_bytes): past it, 503 with Retry-After, from the
  headers when there is a Content-Length.
- Hundreds of query arguments get an answer at once (libmicrohttpd used to
  fill its per-connection pool with them and leave the client waiting for
  the idle timeout).
- POST /leads/sync takes JSON only (application/json, +json): a text/plain
  form post from a foreign page (CSRF, with auth.disabled) is 415 and
  reaches nothing.

New settings are passed through the environment (SECTION_KEY), so that a
gateway without them still starts and shows the old behaviour.
"""
import json
import re
import socket
import time

import pytest
import requests

from leadhelpers import demo_email, is_problem
from mgw_harness import rss_kb as _rss_kb  # noqa: E402

MIB = 1024 * 1024
SYNC_OP = "syncMultipleLeads"


def _open_upload(port, method, path, headers, length, first_bytes):
    """A connection that sent its headers (Content-Length: length) and the
    first first_bytes of the body, and holds."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    head = "%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (method, path, length)
    head += "".join("%s: %s\r\n" % kv for kv in headers.items())
    s.sendall(head.encode() + b"\r\n")
    s.settimeout(2)
    try:
        s.sendall(b" " * first_bytes)
    except OSError:
        pass  # answered and closed already: the rest of the body is not wanted
    return s


def _read_reply(s, timeout):
    """(status, headers, body) of the reply on s; None when none came within timeout."""
    s.settimeout(timeout)
    buf = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
    except socket.timeout:
        if b"\r\n\r\n" not in buf:
            return None
    except ConnectionResetError:
        pass
    if not buf:
        return None
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


def _problem(reply, status):
    assert reply is not None, "no answer"
    got, headers, body = reply
    assert got == status, (got, body[:300])
    assert headers["content-type"].startswith("application/problem+json")
    doc = json.loads(body)
    assert doc["status"] == status and doc["request_id"] == headers["x-request-id"]
    return headers, doc


# ------------------------------------------------------------- item 1

REFUSED_FROM_HEADERS = [
    # (method, path, headers, status)
    ("POST", "/leads/sync", {"Content-Type": "application/json"}, 401),             # no key
    ("POST", "/leads/sync", {"Content-Type": "application/json", "X-API-Key": "wrong"}, 401),
    ("POST", "/nope", {"Content-Type": "application/json"}, 404),
    ("POST", "/healthz", {"Content-Type": "application/json"}, 405),
    ("PUT", "/leads/5", {"Content-Type": "application/json"}, 405),
    ("GET", "/leads?email=a@x.com", {"X-API-Key": "test-key"}, 413),                # body on a GET
    ("POST", "/leads/sync", {"Content-Type": "text/plain", "X-API-Key": "test-key"}, 415),
]


def test_refused_before_the_body_is_read(fresh_sim, gateway_factory):
    """96 connections announce 8 MiB bodies and send 256 KiB of them: each is
    answered at once from its headers, and the process does not grow."""
    gw = gateway_factory(fresh_sim.endpoint)
    assert gw.leads(email="joe@marketo.com").status_code == 200  # warm up
    rss0 = _rss_kb(gw.proc.pid)
    held = []
    try:
        for method, path, headers, status in REFUSED_FROM_HEADERS:
            for _ in range(96 // len(REFUSED_FROM_HEADERS) + 1):
                t0 = time.monotonic()
                s = _open_upload(gw.port, method, path, headers, 8 * MIB, 256 * 1024)
                held.append(s)
                reply = _read_reply(s, 3.0)
                assert reply is not None, "%s %s: no answer before the body was sent" % (method, path)
                _problem(reply, status)
                assert time.monotonic() - t0 < 2.5
        rss1 = _rss_kb(gw.proc.pid)
        assert rss1 - rss0 < 16 * 1024, "refused uploads cost %d kB" % (rss1 - rss0)
    finally:
        for s in held:
            s.close()
    assert gw.alive()
    assert gw.leads(email="joe@marketo.com").status_code == 200
    assert fresh_sim.calls(SYNC_OP) == 0


def test_body_budget_is_503_with_retry_after(fresh_sim, gateway_factory):
    """Three 1 MiB bodies in progress fill a 3 MiB budget: a fourth is 503
    with Retry-After from its headers, a chunked one 503 too; the budget is
    back once one of the three is gone."""
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.max_body_bytes": MIB},
                         env={"GATEWAY_MAX_BODY_TOTAL_BYTES": str(3 * MIB)})
    hdrs = {"Content-Type": "application/json", "X-API-Key": "test-key"}
    held = [_open_upload(gw.port, "POST", "/leads/sync", hdrs, MIB, 1000) for _ in range(3)]
    try:
        for s in held:
            assert _read_reply(s, 0.3) is None  # being read, not answered
        t0 = time.monotonic()
        s = _open_upload(gw.port, "POST", "/leads/sync", hdrs, MIB, 1000)
        headers, doc = _problem(_read_reply(s, 3.0), 503)
        s.close()
        assert time.monotonic() - t0 < 2.5
        assert int(headers["retry-after"]) >= 1
        assert doc["type"].endswith(":body-budget")
        text = gw.get("/metrics").text
        assert re.search(r"^http_request_body_bytes %d$" % (3 * MIB), text, re.M), text[:3000]

        def chunks():
            for _ in range(4):
                yield b" " * 8192
        r = requests.post(gw.base + "/leads/sync", data=chunks(), headers=hdrs, timeout=10)
        is_problem(r, 503)
        assert int(r.headers["Retry-After"]) >= 1

        held.pop().close()
        time.sleep(0.5)
        body = json.dumps({"leads": [{"email": demo_email(7)}]}).encode()
        body += b" " * (MIB - len(body))
        r = requests.post(gw.base + "/leads/sync", data=body, headers=hdrs, timeout=30)
        assert r.status_code == 200, r.text[:300]
        assert r.json()["results"][0]["status"] in ("CREATED", "UPDATED")
    finally:
        for s in held:
            s.close()
    assert gw.alive()


# ------------------------------------------------------------- item 4

def test_many_query_arguments_are_answered_at_once(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint)
    # 500 keys in the documented repeated form (about 14 KB): all answered
    emails = [demo_email(i) for i in range(1, 501)]
    t0 = time.monotonic()
    r = gw.get("/leads", params=[("email", e) for e in emails], timeout=15)
    assert r.status_code == 200, r.text[:300]
    assert [x["email"] for x in r.json()["leads"]] == emails
    assert time.monotonic() - t0 < 10
    # 2,000 bare arguments on /healthz, no key: ignored
    t0 = time.monotonic()
    r = requests.get(gw.base + "/healthz?" + "&".join(["a"] * 2000), timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert time.monotonic() - t0 < 2
    # more keys than gateway.max_keys, short enough for the request line: 400
    r = gw.get_raw("/leads?" + "&".join("id=%d" % (1000000 + i) for i in range(1, 1202)), timeout=5)
    body = is_problem(r, 400)
    assert "too many keys" in body["detail"]
    # a request line longer than the connection's memory: libmicrohttpd's 414, at once
    t0 = time.monotonic()
    r = gw.get("/leads", params=[("email", demo_email(i)) for i in range(1, 1301)], timeout=5)
    assert r.status_code in (414, 431)
    assert time.monotonic() - t0 < 2
    assert gw.alive()


def test_query_arguments_decode_as_before(fresh_sim, gateway_factory):
    """%-decoding, '+' a space and %2B a plus, %00 a control character, an
    empty segment an empty (unknown) name, a bare name an empty value: what
    libmicrohttpd's own parser did."""
    gw = gateway_factory(fresh_sim.endpoint)
    r = gw.get_raw("/leads?email=joe%40marketo.com&fields=FirstName,Company")
    assert r.status_code == 200
    assert r.json()["leads"][0]["email"] == "joe@marketo.com"
    assert set(r.json()["leads"][0]["attributes"]) <= {"FirstName", "Company"}
    r = gw.get_raw("/leads?updatedSince=2024-01-01T00:00:00+00:00")  # '+': a space
    assert "RFC 3339" in is_problem(r, 400)["detail"]
    r = gw.get_raw("/leads?updatedSince=%s&limit=1" % time.strftime(
        "%Y-%m-%dT00:00:00%%2B00:00", time.gmtime(time.time() - 86400)))
    assert r.status_code == 200, r.text[:300]
    r = gw.get_raw("/leads?email=a%00b@x.com")
    assert "control character" in is_problem(r, 400)["detail"]
    r = gw.get_raw("/leads?email=joe@marketo.com&&fields=Company")
    is_problem(r, 400)
    r = gw.get_raw("/leads?email")
    assert "empty" in is_problem(r, 400)["detail"]


# ------------------------------------------------------------- item 11

GOOD = {"leads": [{"email": "csrf-victim@example.com", "attributes": {"FirstName": "Mallory"}}]}


@pytest.mark.parametrize("ctype", [
    None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/jsonp", "application/json-seq",
    "text/json", "application/+json",
])
def test_sync_needs_a_json_content_type(fresh_sim, gateway_factory, ctype):
    gw = gateway_factory(fresh_sim.endpoint)
    headers = {"X-API-Key": "test-key"}
    if ctype is not None:
        headers["Content-Type"] = ctype
    r = requests.post(gw.base + "/leads/sync", data=json.dumps(GOOD), headers=headers, timeout=10)
    is_problem(r, 415)
    assert r.headers["Accept"] == "application/json"
    assert fresh_sim.calls(SYNC_OP) == 0
    # without a key it is 401 first, whatever the type
    r = requests.post(gw.base + "/leads/sync", data=json.dumps(GOOD), timeout=10,
                      headers={"Content-Type": ctype or "text/plain"})
    is_problem(r, 401)


@pytest.mark.parametrize("ctype", [
    "application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
    "application/vnd.example+json",
])
def test_sync_accepts_json_types(fresh_sim, gateway_factory, ctype):
    gw = gateway_factory(fresh_sim.endpoint)
    r = gw.post("/leads/sync", json_body={"leads": [{"email": demo_email(9)}]},
                headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text[:300]
    assert fresh_sim.calls(SYNC_OP) == 1


def test_csrf_form_post_with_auth_disabled(fresh_sim, gateway_factory):
    """The CSRF of the issue: auth.disabled, a page on another origin posts
    text/plain (no preflight needed). 415, and no lead is created."""
    gw = gateway_factory(fresh_sim.endpoint, {"auth.api_keys": "", "auth.disabled": "true",
                                              "cors.allowed_origins": "https://app.example.com"})
    r = requests.post(gw.base + "/leads/sync", data=json.dumps(GOOD), timeout=10,
                      headers={"Content-Type": "text/plain;charset=UTF-8",
                               "Origin": "https://evil.example.net"})
    is_problem(r, 415)
    assert "Access-Control-Allow-Origin" not in r.headers
    assert fresh_sim.calls(SYNC_OP) == 0
    r = requests.get(gw.base + "/leads", params={"email": GOOD["leads"][0]["email"]}, timeout=10)
    assert r.status_code == 200 and r.json()["leads"] == []
    # the same body as JSON from the gateway's own user works
    r = requests.post(gw.base + "/leads/sync", json=GOOD, timeout=10)
    assert r.status_code == 200 and r.json()["created"] == 1
