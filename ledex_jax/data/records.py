"""The SFT record: one training example as the collection pipeline writes it (one JSON per line).

    {"id", "problem", "wrong_code", "feedback", "explanation", "refined_code", "format", "source"}

``problem`` is the task text including its example test. ``format`` says which prompt the record
trains: "refine" (answer = refined code), "explain_refine" (answer = explanation, then refined
code) or "codegen" (problem -> solution in ``refined_code``; wrong_code, feedback and explanation
empty). Validation happens on read so a bad file fails before any training starts, with a message
naming the line, the id, the field and the fix. No TF, no JAX.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FORMATS = ("refine", "explain_refine", "codegen")
FIELDS = ("id", "problem", "wrong_code", "feedback", "explanation", "refined_code", "format", "source")

# Fields that must be non-empty, and fields that must be empty, for each format.
_REQUIRED = {
    "refine": ("id", "problem", "wrong_code", "feedback", "refined_code", "source"),
    "explain_refine": ("id", "problem", "wrong_code", "feedback", "explanation", "refined_code", "source"),
    "codegen": ("id", "problem", "refined_code", "source"),
}
_MUST_BE_EMPTY = {"refine": (), "explain_refine": (), "codegen": ("wrong_code", "feedback", "explanation")}


class SFTRecordError(ValueError):
    """A record that cannot be trained on; the message names where it is and how to fix it."""


@dataclasses.dataclass(frozen=True)
class SFTRecord:
    id: str
    problem: str
    wrong_code: str
    feedback: str
    explanation: str
    refined_code: str
    format: str
    source: str

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def validate_record(obj: Any, where: str = "record") -> SFTRecord:
    """``obj`` as an SFTRecord, or an SFTRecordError naming ``where``, the field and the fix."""
    if not isinstance(obj, Mapping):
        raise SFTRecordError(f"{where}: expected a JSON object with fields {', '.join(FIELDS)}; "
                             f"got {type(obj).__name__}")
    rid = obj.get("id")
    if isinstance(rid, str) and rid:
        where = f"{where} (id {rid!r})"
    missing = [f for f in FIELDS if f not in obj]
    if missing:
        raise SFTRecordError(f"{where}: missing field(s) {', '.join(map(repr, missing))}; every record "
                             f"has all of {', '.join(FIELDS)} (use \"\" for unused ones)")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise SFTRecordError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; the fields are "
                             f"{', '.join(FIELDS)} (a misspelt name, or data meant for another file?)")
    for field in FIELDS:
        if not isinstance(obj[field], str):
            raise SFTRecordError(f"{where}: field {field!r} is a {type(obj[field]).__name__}; it must be a "
                                 f"string")
    fmt = obj["format"]
    if fmt not in FORMATS:
        raise SFTRecordError(f"{where}: field 'format' is {fmt!r}; use one of {', '.join(map(repr, FORMATS))}")
    for field in _REQUIRED[fmt]:
        if not obj[field].strip():
            raise SFTRecordError(f"{where}: field {field!r} is empty but a {fmt!r} record needs it; fill it "
                                 f"in or drop the record")
    for field in _MUST_BE_EMPTY[fmt]:
        if obj[field]:
            raise SFTRecordError(f"{where}: field {field!r} must be empty in a 'codegen' record (its prompt "
                                 f"is the problem alone); clear it, or make the record 'refine' or "
                                 f"'explain_refine'")
    return SFTRecord(**{f: obj[f] for f in FIELDS})


def parse_records(lines: Iterable[str], name: str = "<records>") -> list[SFTRecord]:
    """Validated records from JSONL lines (blank lines skipped); ids must be unique."""
    records, seen = [], {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise SFTRecordError(f"{where}: not valid JSON ({err.msg} at column {err.colno}); each line "
                                 f"must be one JSON object") from None
        rec = validate_record(obj, where)
        if rec.id in seen:
            raise SFTRecordError(f"{where}: id {rec.id!r} already used on line {seen[rec.id]}; ids must be "
                                 f"unique (they key the TFDS examples and resume bookkeeping)")
        seen[rec.id] = lineno
        records.append(rec)
    return records


def read_sft_jsonl(path: str | Path) -> list[SFTRecord]:
    """Every record of a JSONL file, validated."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SFTRecordError(f"SFT data file {p} does not exist; pass the JSONL the collection pipeline "
                             f"wrote (or ledex_jax/data/demo/sft_demo.jsonl)")
    with p.open(encoding="utf-8") as f:
        return parse_records(f, name=str(p))


def write_sft_jsonl(path: str | Path, records: Iterable[SFTRecord | Mapping[str, str]]) -> int:
    """Writes validated records, one JSON object per line; returns how many."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for i, rec in enumerate(records):
            if not isinstance(rec, SFTRecord):
                rec = validate_record(rec, f"record {i}")
            f.write(json.dumps(rec.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n
