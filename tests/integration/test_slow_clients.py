"""Slow clients: 500 connections dribbling a request a byte at a time.

They must not block other clients nor exhaust memory, and each is closed
once it has been idle for gateway.idle_timeout_s. Clients that keep sending,
a byte now and then, are closed at the header deadline
(gateway.header_timeout_ms) or the body deadline (gateway.body_timeout_ms)
with a 408; with the connection limit full of them /healthz and /readyz
still answer at once; gateway.max_connections_per_client caps one address.
"""
import json
import os
import re
import resource
import select
import socket
import time

import requests
from mgw_harness import metrics_when  # noqa: E402
from mgw_harness import rss_kb as _rss_kb  # noqa: E402

N = 500


def test_slow_clients_do_not_block_and_are_closed(fresh_sim, gateway_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * N + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * N), hard))
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.idle_timeout_s": 2,
                                              "gateway.connection_limit": 2 * N})
    assert gw.leads(email="joe@marketo.com").status_code == 200  # warm the cache
    rss0 = _rss_kb(gw.proc.pid)

    socks = []
    for _ in range(N):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        s.sendall(b"G")  # the first byte of a request that never completes
        socks.append(s)
    t0 = time.monotonic()

    # other clients are served at once meanwhile
    worst = 0.0
    for _ in range(50):
        a = time.monotonic()
        r = gw.leads(email="joe@marketo.com")
        worst = max(worst, time.monotonic() - a)
        assert r.status_code == 200 and r.headers["X-Cache"] == "HIT"
    assert worst < 0.5, "a normal client waited %.3f s behind slow ones" % worst
    rss1 = _rss_kb(gw.proc.pid)
    assert rss1 - rss0 < 64 * 1024, "500 slow connections cost %d kB" % (rss1 - rss0)

    # dribble one more byte every 4 s: longer than the idle timeout (2 s)
    time.sleep(max(0.0, 4 - (time.monotonic() - t0)))
    for s in socks:
        try:
            s.sendall(b"E")
        except OSError:
            pass
    # every slow connection is closed by the server within the timeout + slack
    deadline = time.monotonic() + 10
    closed = 0
    for s in socks:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data = s.recv(4096)
            # closed without a reply, or closed after an error reply
            while data:
                data = s.recv(4096)
            closed += 1
        except (ConnectionResetError, BrokenPipeError):
            closed += 1
        except socket.timeout:
            pass
        finally:
            s.close()
    assert closed == N, "%d of %d slow connections still open" % (N - closed, N)
    assert gw.alive()
    assert gw.leads(email="joe@marketo.com").status_code == 200


# ---------------------------------------------------------------------------
# Deadlines and room at the limit (issue 12 item 2). The new settings go
# through the environment (SECTION_KEY), so that a gateway without them
# still starts and shows the old behaviour.

HEADER_MS = 1000
BODY_MS = 1500


def _trickle(socks, data, interval, window):
    """Sends socks[i] one more byte of data[i] every interval seconds until
    the server closes it or window seconds pass. Returns, per socket,
    (seconds until closed or None, bytes received)."""
    t0 = time.monotonic()
    sent = [0] * len(socks)
    got = [b""] * len(socks)
    closed = [None] * len(socks)
    next_send = t0
    while time.monotonic() - t0 < window and None in closed:
        open_socks = [s for i, s in enumerate(socks) if closed[i] is None]
        wait = max(0.0, next_send - time.monotonic())
        readable, _, _ = select.select(open_socks, [], [], wait)
        for s in readable:
            i = socks.index(s)
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                got[i] += chunk
            else:
                closed[i] = time.monotonic() - t0
        if time.monotonic() >= next_send:
            for i, s in enumerate(socks):
                if closed[i] is None and sent[i] < len(data[i]):
                    try:
                        s.sendall(data[i][sent[i]:sent[i] + 1])
                        sent[i] += 1
                    except OSError:
                        pass
            next_send += interval
    return closed, got


def _problem_reply(raw, status):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 %d " % status), raw[:200]
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"].lower() == "close"
    doc = json.loads(body)
    assert doc["status"] == status and doc["request_id"] == headers["x-request-id"]
    return headers, doc


def test_slow_headers_are_cut_at_the_header_deadline(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.idle_timeout_s": 5},
                         env={"GATEWAY_HEADER_TIMEOUT_MS": str(HEADER_MS)})
    request = b"GET /leads?email=joe@marketo.com HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\n\r\n"
    # 20 clients sending a header byte every 0.25 s (well inside the idle
    # timeout), and one that sends nothing at all
    socks = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(21)]
    data = [request] * 20 + [b""]
    closed, got = _trickle(socks, data, 0.25, 4.5)
    for s in socks:
        s.close()
    for i in range(20):
        assert closed[i] is not None, "slow client %d still open after 4.5 s" % i
        assert HEADER_MS / 1000 - 0.1 <= closed[i] < HEADER_MS / 1000 + 1.0, closed[i]
        _, doc = _problem_reply(got[i], 408)
        assert doc["type"].endswith(":request-timeout")
        assert "gateway.header_timeout_ms" in doc["detail"]
    assert closed[20] is not None and closed[20] < HEADER_MS / 1000 + 1.0
    assert got[20] == b""  # nothing asked, nothing answered

    # a kept-alive connection: idle longer than the header deadline is fine
    # (the idle timeout's business); its next request's deadline runs from
    # that request's first byte
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    s.sendall(request)
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 "), first[:200]
    time.sleep(HEADER_MS / 1000 + 0.5)
    closed, got = _trickle([s], [request], 0.25, 4.0)
    s.close()
    assert closed[0] is not None
    assert HEADER_MS / 1000 - 0.1 <= closed[0] < HEADER_MS / 1000 + 1.0, closed[0]
    _problem_reply(got[0], 408)
    assert gw.leads(email="joe@marketo.com").status_code == 200


def test_trickled_body_is_cut_at_the_body_deadline(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.idle_timeout_s": 5},
                         env={"GATEWAY_BODY_TIMEOUT_MS": str(BODY_MS)})
    body = json.dumps({"leads": [{"email": "slow@example.com"}]}).encode().ljust(1000)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    s.sendall(b"POST /leads/sync HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\n"
              b"Content-Type: application/json\r\nX-Request-ID: slow-body-1\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body))
    closed, got = _trickle([s], [body], 0.25, 5.0)
    s.close()
    assert closed[0] is not None, "a trickled body outlived the body deadline"
    assert BODY_MS / 1000 - 0.1 <= closed[0] < BODY_MS / 1000 + 1.0, closed[0]
    headers, doc = _problem_reply(got[0], 408)
    assert headers["x-request-id"] == "slow-body-1"
    assert "gateway.body_timeout_ms" in doc["detail"]
    assert fresh_sim.calls("syncMultipleLeads") == 0
    line408 = r'^http_requests_total\{route="/leads/sync",method="POST",status="408"\} 1$'
    text = metrics_when(lambda: gw.get("/metrics"), line408)
    assert 'http_connections_closed_total{reason="body_timeout"} 1' in text
    assert re.search(line408, text, re.M), text


def test_healthz_answers_while_slow_clients_fill_the_limit(fresh_sim, gateway_factory):
    """60 slow clients against connection_limit 40: the probes still get in
    and are answered at once; the oldest slow clients make room."""
    limit = 40
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.connection_limit": limit,
                                              "gateway.idle_timeout_s": 30},
                         env={"GATEWAY_HEADER_TIMEOUT_MS": "30000"})
    slow = []
    try:
        for _ in range(60):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # and never more
            slow.append(s)
        time.sleep(0.3)
        for path in ["/healthz", "/readyz"] * 5:
            t0 = time.monotonic()
            r = requests.get(gw.base + path, timeout=2)
            assert r.status_code == 200, (path, r.text)
            assert time.monotonic() - t0 < 1.0
        # the evicted ones were told why (they had started a request)
        evicted = 0
        for s in slow:
            s.settimeout(0.05)
            try:
                data = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                continue
            if data.startswith(b"HTTP/1.1 503 "):
                assert _problem_reply(data, 503)[0]["retry-after"] == "1"
                evicted += 1
        assert evicted >= 60 - limit
    finally:
        for s in slow:
            s.close()
    assert gw.leads(email="joe@marketo.com").status_code == 200


def test_connections_per_client_are_capped(fresh_sim, gateway_factory):
    cap = 5
    gw = gateway_factory(fresh_sim.endpoint,
                         env={"GATEWAY_MAX_CONNECTIONS_PER_CLIENT": str(cap)})
    held = []
    try:
        for _ in range(cap):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            held.append(s)
        time.sleep(0.2)
        # the sixth from 127.0.0.1 is closed unanswered
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass
        s.settimeout(2)
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            data = b""
        s.close()
        assert data == b"", data[:200]
        # another address is not affected
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", gw.port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = s.recv(65536)
        s.close()
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
        # and 127.0.0.1 gets its slot back when one of its connections ends
        held.pop().close()
        time.sleep(0.3)
        r = requests.get(gw.base + "/healthz", timeout=5)
        assert r.status_code == 200
    finally:
        for s in held:
            s.close()
