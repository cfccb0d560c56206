"""Where a collection run keeps its work, so a killed run resumes without losing or repeating.

Layout of ``DIR``:
    manifest.json            the config the run was started with (and its hash)
    <stage>/part-<p>.jsonl   the records stage <stage> wrote in process p, one JSON per line

Each record has a unique ``key``. A stage appends the records of one finished chunk with a
single write and an fsync, so a kill leaves at most one torn last line, which `read_stage`
drops. Every process reads all parts of a stage (keys are global), writes only its own.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class ManifestMismatch(ValueError):
    """The directory holds a run made with another config."""


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_manifest(workdir: Path, config: Mapping[str, Any], write: bool) -> None:
    """Records ``config`` in a new workdir; in an existing one, refuses a different config and
    names the fields that differ (``write``: only process 0 writes)."""
    path = workdir / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        if old["hash"] != config_hash(config):
            a, b = _flatten(old["config"]), _flatten(json.loads(json.dumps(config)))
            diff = [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
                    for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            raise ManifestMismatch(
                f"{workdir} holds a collection made with another config; differing fields: "
                f"{'; '.join(diff)}. Resume with the same config, or use a new --workdir")
        return
    if write:
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"hash": config_hash(config), "config": config}, indent=1, sort_keys=True))
        os.replace(tmp, path)


def read_stage(workdir: Path, stage: str) -> dict[str, dict]:
    """Every record of a stage (all processes' parts), by key. A torn last line (a kill in the
    middle of a write) is dropped; a bad line elsewhere is an error (the file was edited)."""
    records: dict[str, dict] = {}
    folder = workdir / stage
    for part in sorted(folder.glob("part-*.jsonl")) if folder.is_dir() else ():
        lines = part.read_bytes().split(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # the last line, without its newline: torn by a kill
                    log.warning("%s: dropping a torn last line (the run was interrupted mid-write)", part)
                    continue
                raise ValueError(f"{part} line {i + 1} is not JSON; the collection files must not be "
                                 "edited (delete the stage folder to redo that stage)") from None
            records.setdefault(rec["key"], rec)
    return records


def part_path(workdir: Path, stage: str, process: int) -> Path:
    return workdir / stage / f"part-{process:05d}.jsonl"


def append_records(workdir: Path, stage: str, process: int, records: Iterable[Mapping]) -> int:
    """Appends records as one write, then fsyncs; a torn last line left by an earlier kill is
    cut first so the new lines start on a line of their own."""
    path = part_path(workdir, stage, process)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = b"".join(json.dumps(r, ensure_ascii=False, sort_keys=True).encode() + b"\n" for r in records)
    if not blob:
        return 0
    with open(path, "ab+") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":  # torn tail: cut back to the last complete line
                f.seek(0)
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)
                f.seek(0, os.SEEK_END)
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    return blob.count(b"\n")


def write_atomic(path: Path, data: bytes) -> None:
    """Writes a whole file so readers see the old or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
