"""`python -m executors`: JSONL in, JSONL out, bad lines become error records."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADD = "def add(a, b):\n    return a + b\n"


def cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "executors", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_good_and_bad_lines(tmp_path):
    lines = [
        json.dumps({"id": "good", "program": ADD, "tests": ["assert add(1, 2) == 3"]}),
        json.dumps({"id": "wrong", "program": ADD.replace("+", "-"),
                    "tests": ["assert add(1, 2) == 3", "assert add(2, 0) == 2"], "timeout": 10}),
        "{not json",
        "",
        json.dumps([1, 2]),
        json.dumps({"program": ADD, "tests": []}),
        json.dumps({"id": "no-program", "tests": ["assert True"]}),
        json.dumps({"id": "bad-tests", "program": ADD, "tests": "assert add(1, 2) == 3"}),
        json.dumps({"id": "bad-test-item", "program": ADD, "tests": [1]}),
        json.dumps({"id": "bad-timeout", "program": ADD, "tests": ["assert 1"], "timeout": -1}),
        json.dumps({"id": "empty", "program": ADD, "tests": []}),
        json.dumps({"id": "loop", "program": "def f():\n    while True:\n        pass\n",
                    "tests": ["assert f() == 1"], "timeout": 2}),
    ]
    inp, out = tmp_path / "jobs.jsonl", tmp_path / "results.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    proc = cli("--input", str(inp), "--output", str(out), "--workers", "2", "--per-test-timeout", "1")
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in recs]
    assert ids == ["good", "wrong", "line:3", "line:5", "line:6", "no-program", "bad-tests",
                   "bad-test-item", "bad-timeout", "empty", "loop"]
    by_id = dict(zip(ids, recs))
    assert by_id["good"]["passed"] is True and by_id["good"]["tests"] == [{"status": "passed", "message": ""}]
    assert by_id["good"]["feedback"] == ""
    wrong = by_id["wrong"]
    assert wrong["passed"] is False
    assert [t["status"] for t in wrong["tests"]] == ["failed", "passed"]
    assert wrong["feedback"] == ("The code above fails the given unit test:\n"
                                 "assert add(1, 2) == 3\n# Actual output: -1")
    for bad in ("line:3", "line:5", "line:6", "no-program", "bad-tests", "bad-test-item",
                "bad-timeout"):
        assert by_id[bad]["passed"] is False and by_id[bad]["error"], by_id[bad]
    assert "not valid JSON" in by_id["line:3"]["error"]
    assert by_id["empty"]["passed"] is False and by_id["empty"]["error"]
    assert by_id["loop"]["tests"][0]["status"] == "timeout"
    assert "1/" in proc.stderr  # summary line: 1 of the programs passed


def test_cli_refuses_to_overwrite(tmp_path):
    inp, out = tmp_path / "jobs.jsonl", tmp_path / "results.jsonl"
    inp.write_text(json.dumps({"id": "a", "program": ADD, "tests": ["assert add(1, 1) == 2"]}) + "\n")
    out.write_text("precious\n")
    proc = cli("--input", str(inp), "--output", str(out))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert out.read_text() == "precious\n"
    proc = cli("--input", str(inp), "--output", str(out), "--overwrite", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["passed"] is True


def test_cli_missing_input(tmp_path):
    proc = cli("--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_refuses_to_run_without_namespaces_unless_allowed(tmp_path):
    inp, out = tmp_path / "jobs.jsonl", tmp_path / "results.jsonl"
    inp.write_text(json.dumps({"id": "a", "program": ADD, "tests": ["assert add(1, 1) == 2"]}) + "\n")
    proc = cli("--input", str(inp), "--output", str(out), "--sandbox", "none", "--workers", "1")
    assert proc.returncode == 2 and "--allow-unsandboxed" not in proc.stdout
    assert "refusing to run untrusted programs without a sandbox" in proc.stderr
    assert "apt-get install -y bubblewrap" in proc.stderr and not out.exists()
    proc = cli("--input", str(inp), "--output", str(out), "--sandbox", "none", "--workers", "1",
               "--allow-unsandboxed")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["passed"] is True and "UNSANDBOXED" in proc.stderr
