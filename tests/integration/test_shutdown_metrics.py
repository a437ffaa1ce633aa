"""Operations under load: graceful shutdown and the Prometheus exposition.

Shutdown: a gateway under steady load gets SIGTERM. /readyz flips to 503 at
once (on a connection opened before the signal), requests in flight finish
with 200, requests that start during the drain are answered at once (503
shutting-down with Retry-After, which the clients honour; never reset, never
refused while the gateway drains), and the process exits 0 within the drain
timeout; then nobody listens.

Metrics: /metrics after real traffic passes `promtool check metrics` (names,
types, HELP lines, units) and carries histograms for request and upstream
durations.
"""
import http.client
import json
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests



def _hammer(gw, stop, results, idx):
    """One client: distinct uncached lookups on one keep-alive session until
    stop. Each result is (kind, value, monotonic start of the request); a
    status's value is (status, problem type, Retry-After, monotonic end)."""
    s = requests.Session()
    s.headers["X-API-Key"] = gw.session.headers["X-API-Key"]
    i = 0
    while not stop.is_set():
        i += 1
        email = "lead%d@example.com" % (1 + (idx * 997 + i) % 2500)
        t = time.monotonic()
        try:
            r = s.get(gw.base + "/leads", params={"email": email}, timeout=20)
            kind = r.json().get("type", "") if r.status_code != 200 else ""
            results.append(("status", (r.status_code, kind, r.headers.get("Retry-After"),
                                       time.monotonic()), t))
            if r.status_code == 503 and r.headers.get("Retry-After"):
                # a well-behaved client: retries after Retry-After
                stop.wait(int(r.headers["Retry-After"]))
        except requests.ConnectionError as e:
            text = repr(e)
            if "Connection refused" in text or "Errno 111" in text:
                results.append(("refused", None, t))
                time.sleep(0.05)
            else:
                results.append(("reset", text, t))
        except requests.RequestException as e:
            results.append(("error", repr(e), t))


def test_sigterm_under_load_drains_cleanly(fresh_sim, gateway_factory):
    fresh_sim.faults({"operation": "*", "latency_ms": 1000})
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.drain_timeout_ms": 8000,
                                              "ratelimit.calls_per_window": 1000,
                                              "ratelimit.max_concurrent": 10})
    # a keep-alive connection opened before the signal, to watch /readyz on
    probe = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    probe.request("GET", "/readyz")
    first = probe.getresponse()
    first.read()
    assert first.status == 200

    stop = threading.Event()
    results = []
    clients = [threading.Thread(target=_hammer, args=(gw, stop, results, i), daemon=True)
               for i in range(8)]
    for t in clients:
        t.start()
    try:
        time.sleep(1.5)  # steady state: requests in flight at the sim
        assert any(k == "status" for k, _, _ in results)
        in_flight_before = len(results)

        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        # The signal reaches the gateway's signal thread within moments: poll
        # /readyz on the connection opened before it until it says 503. A 200
        # must keep the connection open (never 200 with Connection: close: the
        # reconnect would be refused), so every probe goes over this one socket.
        while True:
            probe.request("GET", "/readyz")
            ready = probe.getresponse()
            body = ready.read()
            flip = time.monotonic() - t0
            if ready.status == 200:
                assert (ready.getheader("Connection") or "").lower() != "close", \
                    "a ready answer must not close its connection"
            if ready.status != 200 or flip > 0.5:
                break
            time.sleep(0.01)
        assert ready.status == 503, "readyz must say 503 as soon as draining starts"
        problem = json.loads(body)
        assert problem["status"] == 503 and problem["type"].endswith("draining"), problem
        assert flip < 0.5

        code = gw.proc.wait(timeout=12)
        elapsed = time.monotonic() - t0
    finally:
        # the load threads stop whatever happened above, so pytest can exit
        stop.set()
        for t in clients:
            t.join(timeout=30)
    assert code == 0
    assert elapsed < 8 + 2, "exit within the drain timeout"
    statuses = [(v, t) for k, v, t in results if k == "status"]
    # every answer: 200, or (a request that reached the server once the
    # drain had begun) at once 503 shutting-down with Retry-After
    assert all(v[0] == 200 or (v[0] == 503 and v[1].endswith("shutting-down") and v[2] == "1")
               for v, t in statuses), sorted(set(v[:3] for v, t in statuses))
    # the requests in flight at the signal (they waited for the sim's 1 s:
    # admitted before the drain) finished with 200; a 503 is only ever the
    # immediate answer to a request that reached the server during the drain
    in_flight = [v for v, t in statuses if v[3] - t >= 0.9 and v[3] > t0]
    assert in_flight, "no request was in flight at the signal"
    assert all(v[0] == 200 for v in in_flight), in_flight[:3]
    assert all(t > t0 - 0.5 for v, t in statuses if v[0] == 503)
    assert len(results) > in_flight_before, "requests in flight at SIGTERM completed"
    resets = [v for k, v, t in results if k in ("reset", "error")]
    assert not resets, resets[:3]
    # refused only once the process was gone
    refused_early = [t for k, v, t in results if k == "refused" and t < t0 + elapsed - 0.3]
    assert not refused_early, "a connection was refused while the gateway was still draining"
    # and afterwards, nobody is listening
    with pytest.raises(requests.ConnectionError):
        requests.get(gw.base + "/healthz", timeout=2)


def test_drain_deadline_cuts_calls_with_503(sim_factory, gateway_factory):
    # Calls still in flight when the drain budget runs out are cut by the
    # gateway, not by Marketo: a lookup gets 503 (shutting down), not 504,
    # and a sync batch NOT_SENT "shutting down" that may have been applied.
    sim = sim_factory(leads=50)
    sim.faults({"operation": "*", "latency_ms": 30000})
    gw = gateway_factory(sim.endpoint, {"gateway.drain_timeout_ms": 1500})
    box = {}
    threads = [
        threading.Thread(target=lambda: box.update(lookup=gw.leads(email="lead7@example.com")),
                         daemon=True),
        threading.Thread(target=lambda: box.update(sync=gw.post(
            "/leads/sync", {"leads": [{"email": "lead8@example.com"}]})), daemon=True),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while sim.stats().get("in_flight", 0) < 2:
        assert time.monotonic() < deadline, "the calls never reached the sim"
        time.sleep(0.02)
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert gw.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 1.5 + 2
    r = box["lookup"]
    assert r.status_code == 503, (r.status_code, r.text)
    problem = r.json()
    assert problem["status"] == 503 and problem["type"].endswith("shutting-down"), problem
    r = box["sync"]
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["status"] for x in res] == ["NOT_SENT"], res
    assert "shutting down" in res[0]["error"] and "may have been applied" in res[0]["error"], res
    assert "did not answer" not in res[0]["error"], res


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) not installed")
def test_metrics_pass_promtool(fresh_sim, gw):
    for email in ("joe@marketo.com", "joe@marketo.com", "lead7@example.com"):
        assert gw.leads(email=email).status_code == 200
    assert gw.get("/leads", params={"email": "x"}).status_code in (200, 400)
    assert gw.get("/nope").status_code == 404
    r = requests.get(gw.base + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    check = subprocess.run(["promtool", "check", "metrics"], input=r.text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    types = {}
    helps = set()
    for line in r.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line.startswith("# HELP "):
            helps.add(line.split(" ", 3)[2])
    assert set(types) <= helps, "every family has a HELP line"
    hist = [n for n, k in types.items() if k == "histogram"]
    assert any("request" in n and n.endswith("_seconds") for n in hist), hist
    assert any("upstream" in n and n.endswith("_seconds") for n in hist), hist
    # no secret in the exposition
    assert gw.session.headers["X-API-Key"] not in r.text


def test_sighup_is_logged_and_ignored(fresh_sim, gateway_factory):
    """SIGHUP (a process manager's "reload") never stops the gateway: a
    request in flight finishes, new ones are served, a log line says it was
    ignored; during a drain it does not cut the drain short."""
    fresh_sim.faults({"operation": "*", "latency_ms": 800})
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.drain_timeout_ms": 8000})
    out = {}
    t = threading.Thread(target=lambda: out.update(r=gw.leads(email="lead11@example.com")),
                         daemon=True)
    t.start()
    time.sleep(0.3)  # the lookup is at the sim
    gw.proc.send_signal(signal.SIGHUP)
    t.join(timeout=20)
    assert out["r"].status_code == 200, out["r"].text
    assert out["r"].json()["leads"][0]["email"] == "lead11@example.com"
    time.sleep(0.2)
    assert gw.alive(), "SIGHUP must not stop the gateway"
    r = requests.get(gw.base + "/readyz", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ready"}
    assert "SIGHUP ignored" in gw.log_text()

    # while draining: SIGHUP neither ends the drain early nor kills the process
    t = threading.Thread(target=lambda: out.update(r2=gw.leads(email="lead12@example.com")),
                         daemon=True)
    t.start()
    time.sleep(0.3)
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    gw.proc.send_signal(signal.SIGHUP)
    t.join(timeout=20)
    assert out["r2"].status_code == 200, out["r2"].text
    assert gw.proc.wait(timeout=12) == 0
