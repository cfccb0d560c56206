"""Raw records from a local file or the Hugging Face hub, with errors that name the source.

Local formats: jsonl (optionally .gz), a JSON array, parquet, or a directory written by
``datasets.save_to_disk``. ``datasets`` and ``pyarrow`` are imported only when needed.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ledex_jax.data.benchmarks.problem import BenchmarkDataError

LOCAL_FORMATS = ".jsonl, .jsonl.gz, .json, .json.gz, .parquet, or a directory written by datasets.save_to_disk"


def existing_path(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or an error that says what file was expected there."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BenchmarkDataError(f"{what}: {p} does not exist; pass the path of a local copy")
    return p


def read_records(path: str | Path, what: str, split: str | None = None) -> list[dict[str, Any]]:
    """Every record of a local benchmark file (or of ``split`` of a saved DatasetDict)."""
    return list(iter_records(path, what, split))


def iter_records(path: str | Path, what: str, split: str | None = None) -> Iterator[dict[str, Any]]:
    """Records one by one, so large parquet files and saved datasets stream. A missing path
    or unknown format fails here, not at the first ``next``."""
    p = existing_path(path, what)
    name = p.name.lower()
    if p.is_dir():
        return iter(_saved_dataset(p, what, split))
    if name.endswith((".jsonl", ".jsonl.gz")):
        return _jsonl(p, what)
    if name.endswith((".json", ".json.gz")):
        return iter(_json(p, what))
    if name.endswith(".parquet"):
        return _parquet(p, what)
    raise BenchmarkDataError(f"{what}: {p} has an unknown format; expected {LOCAL_FORMATS}")


def load_hub(name: str, split: str, what: str, *, builder: str | None = None,
             **kwargs) -> Iterable[Mapping[str, Any]]:
    """A split of hub dataset ``name`` via ``datasets.load_dataset(builder or name, ...)``
    (a packaged ``builder`` such as "json" reads a repo whose loading script datasets no
    longer runs); a failure says how to use a local copy instead."""
    try:
        import datasets
    except ImportError as err:
        raise BenchmarkDataError(f"{what}: loading {name!r} from the hub needs the `datasets` "
                                 f"package ({err}); install it or pass a local path") from err
    try:
        return datasets.load_dataset(builder or name, split=split, **kwargs)
    except Exception as err:  # network, auth, unknown split: all end the same way for the user
        raise BenchmarkDataError(
            f"{what}: could not load split {split!r} of {name!r} from the hub "
            f"({type(err).__name__}: {err}); pass a local copy instead ({LOCAL_FORMATS})") from err


def require(record: Mapping[str, Any], fields: Iterable[str], what: str, where: str) -> None:
    """Raise if ``record`` lacks any of ``fields``, listing what it has instead."""
    missing = [f for f in fields if f not in record]
    if missing:
        raise BenchmarkDataError(
            f"{what}: {where} lacks field(s) {', '.join(map(repr, missing))} (it has "
            f"{', '.join(map(repr, sorted(record)))}); is this the right file for {what}?")


def json_field(record: Mapping[str, Any], field: str, what: str, where: str) -> Any:
    """A field that upstream stores as a JSON string (APPS does); '' decodes to None."""
    value = record.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise BenchmarkDataError(f"{what}: {where}: field {field!r} is not valid JSON ({err})") from err


def _jsonl(p: Path, what: str) -> Iterator[dict[str, Any]]:
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise BenchmarkDataError(f"{what}: {p}, line {lineno}: not valid JSON ({err}); "
                                         "expected one JSON object per line") from err
            if not isinstance(record, dict):
                raise BenchmarkDataError(f"{what}: {p}, line {lineno}: expected a JSON object, "
                                         f"got {type(record).__name__}")
            yield record


def _json(p: Path, what: str) -> list[dict[str, Any]]:
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return list(_jsonl(p, what))  # many ".json" files are really JSON lines
    if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        data = list(data.values())  # {task_id: record}
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BenchmarkDataError(f"{what}: {p}: expected a JSON array of objects (or JSON lines)")
    return data


def _parquet(p: Path, what: str) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise BenchmarkDataError(f"{what}: reading {p} needs `pyarrow` ({err})") from err
    try:
        parquet = pq.ParquetFile(p)
    except Exception as err:
        raise BenchmarkDataError(f"{what}: {p} is not a readable parquet file ({err})") from err
    return (row for batch in parquet.iter_batches(batch_size=64) for row in batch.to_pylist())


def _saved_dataset(p: Path, what: str, split: str | None) -> Iterable[dict[str, Any]]:
    if not ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()
            or (p / "state.json").exists()):
        raise BenchmarkDataError(f"{what}: {p} is a directory but not one written by "
                                 f"datasets.save_to_disk; pass a file ({LOCAL_FORMATS})")
    import datasets

    data = datasets.load_from_disk(str(p))
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise BenchmarkDataError(f"{what}: {p} holds splits {sorted(data)}, not {split!r}; "
                                     "pass split= one of those")
        data = data[split]
    return data
