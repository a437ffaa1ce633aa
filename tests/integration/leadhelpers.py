"""Assertion helpers shared by the lead-route end-to-end tests."""


def is_problem(resp, status):
    """Asserts resp is an RFC 9457 problem with this status; returns its body."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers.get("Content-Type", "").startswith("application/problem+json"), \
        resp.headers.get("Content-Type")
    body = resp.json()
    assert body.get("status") == status
    assert "title" in body
    return body


def demo_email(i):
    return "lead%d@example.com" % i
