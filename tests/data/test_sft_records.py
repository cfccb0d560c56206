"""SFT record validation: good records round-trip, bad ones fail naming line, id, field and fix."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ledex_jax.data.records import FIELDS, SFTRecord, SFTRecordError, parse_records, read_sft_jsonl, write_sft_jsonl

GOOD = {
    "id": "mbpp/601/0", "problem": "Write f.\nassert f(1) == 2", "wrong_code": "def f(x): return x",
    "feedback": "The code above fails the given unit test:\nassert f(1) == 2\n# Actual output: 1",
    "explanation": "It forgets to add one.", "refined_code": "def f(x): return x + 1",
    "format": "explain_refine", "source": "mbpp/601",
}
CODEGEN = dict(GOOD, id="mbpp/601/c", wrong_code="", feedback="", explanation="", format="codegen")


def lines(*objs):
    return [json.dumps(o) for o in objs]


def error_lines(raw) -> str:
    with pytest.raises(SFTRecordError) as err:
        parse_records(raw, "sft.jsonl")
    return str(err.value)


def error(*objs) -> str:
    return error_lines(lines(*objs))


def test_round_trip(tmp_path):
    path = tmp_path / "sft.jsonl"
    assert write_sft_jsonl(path, [GOOD, SFTRecord(**CODEGEN)]) == 2
    got = read_sft_jsonl(path)
    assert [r.to_json() for r in got] == [GOOD, CODEGEN]
    assert list(got[0].to_json()) == list(FIELDS)


def test_refine_may_carry_an_explanation_and_blank_lines_are_skipped():
    recs = parse_records(["", json.dumps(dict(GOOD, format="refine")), "  "], "x")
    assert [r.format for r in recs] == ["refine"]


@pytest.mark.parametrize("bad, needles", [
    (dict(GOOD, format="refin"), ["line 2", "'mbpp/601/0'", "'format'", "'refin'", "'explain_refine'"]),
    ({k: v for k, v in GOOD.items() if k != "feedback"}, ["line 2", "missing field(s) 'feedback'"]),
    (dict(GOOD, refind_code="x"), ["unknown field(s) 'refind_code'", "misspelt"]),
    (dict(GOOD, feedback=["a"]), ["'feedback' is a list", "must be a string"]),
    (dict(GOOD, explanation=" "), ["'explanation' is empty", "'explain_refine' record needs it"]),
    (dict(GOOD, format="refine", wrong_code=""), ["'wrong_code' is empty", "'refine'"]),
    (dict(CODEGEN, wrong_code="def f(x): return x"), ["'wrong_code' must be empty", "'codegen'", "clear it"]),
    (dict(GOOD, id=""), ["line 2", "'id' is empty"]),
])
def test_bad_record_names_line_id_field_and_fix(bad, needles):
    msg = error(CODEGEN, bad)
    for needle in needles:
        assert needle in msg, msg


def test_duplicate_id_names_both_lines():
    msg = error(GOOD, CODEGEN, dict(GOOD, format="refine"))
    assert "line 3" in msg and "line 1" in msg and "'mbpp/601/0'" in msg and "unique" in msg


def test_bad_json_and_non_object():
    assert "line 1: not valid JSON" in error_lines(["{not json"])
    assert "expected a JSON object" in error_lines(["[1, 2]"])


def test_missing_file(tmp_path):
    with pytest.raises(SFTRecordError, match="does not exist"):
        read_sft_jsonl(tmp_path / "nope.jsonl")


def test_records_and_prompts_import_without_tf_or_jax():
    code = ("import sys, ledex_jax.data.records, ledex_jax.data.prompts; "
            "print(sorted(m for m in ('tensorflow', 'seqio', 'jax', 'tensorflow_datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
