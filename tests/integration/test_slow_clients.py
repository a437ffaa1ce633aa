"""Slow clients: 500 connections dribbling a request a byte at a time.

They must not block other clients nor exhaust memory, and each is closed
once it has been idle for gateway.idle_timeout_s.
"""
import os
import resource
import socket
import time

import requests

N = 500


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


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
