"""Process helpers shared by the pytest suites that start real servers.

marketo-sim and marketo-gateway listen on port 0 and print one line,
"<name> listening on HOST:PORT"; read_port() waits for it. drain() keeps a
child's stdout pipe empty afterwards; stop() ends a child and reaps it.
"""
import os
import select
import signal
import subprocess
import threading
import time


def read_port(proc, prefix, timeout=15.0):
    """Reads proc's stdout until a line starts with prefix; returns the port after its last ':'."""
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening" % proc.returncode)
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if not ready:
            continue
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode("utf-8", "replace").strip()
            if text.startswith(prefix):
                return int(text.rsplit(":", 1)[1])
    raise RuntimeError("no '%s' line within %.0f s" % (prefix, timeout))


def drain(stream):
    """Keeps reading a pipe so the child never blocks on a full stdout."""
    def run():
        try:
            while os.read(stream.fileno(), 65536):
                pass
        except (OSError, ValueError):
            pass
    threading.Thread(target=run, daemon=True).start()


def stop(proc, sig=signal.SIGTERM, timeout=10.0):
    """Sends sig to a running proc and waits; SIGKILL when it does not end in time."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        proc.kill()
        proc.wait(timeout=5)
