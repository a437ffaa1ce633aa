"""scripts/summarize.py, the closing line of scripts/test.sh and .ci/run:
a case that did not run is counted (one by one, from tests/expected-cases.txt),
fails the run under --strict (CI), and a runner that exits non-zero without a
failed case is a failure."""
import os
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SUMMARIZE = os.path.join(ROOT, "scripts", "summarize.py")
JUNIT = """<testsuites><testsuite name="pytest">
<testcase classname="tests.x.test_a" name="t1"/>
<testcase classname="tests.x.test_a" name="t2"><skipped message="no redis"/></testcase>
</testsuite></testsuites>"""


def run(tmp_path, *args, expected="plain/http\ttests/x/test_a\t3\n", rc="0"):
    xml = tmp_path / "r.xml"
    xml.write_text(JUNIT)
    exp = tmp_path / "expected.txt"
    exp.write_text(expected)
    p = subprocess.run(["/usr/bin/python3", SUMMARIZE, *args, "--expect", str(exp),
                        "plain/http=%s@%s" % (xml, rc)], capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout.splitlines()


def test_cases_that_did_not_run_are_counted(tmp_path):
    code, lines = run(tmp_path)
    assert code == 0
    # one skipped case plus one the module never reported (3 expected)
    assert lines[-1] == "1 passed, 0 failed, 2 skipped"
    assert any("2 of 3 did not run" in l for l in lines)


def test_strict_fails_on_any_skip(tmp_path):
    code, lines = run(tmp_path, "--strict")
    assert code == 1
    assert lines[-1] == "1 passed, 2 failed, 0 skipped"


def test_runner_exit_without_failed_case_fails(tmp_path):
    code, lines = run(tmp_path, expected="", rc="5")
    assert code == 1
    assert any("exited 5" in l for l in lines)
    assert lines[-1].startswith("1 passed, 1 failed")


def test_expected_file_covers_every_stage():
    """tests/expected-cases.txt names units of both stages."""
    with open(os.path.join(ROOT, "tests", "expected-cases.txt")) as f:
        labels = {l.split("\t")[0] for l in f if l.strip() and not l.startswith("#")}
    assert labels == {"plain/c", "plain/http", "asan/c", "asan/http"}
