"""Safetensors checkpoints, single-file or sharded: validated lazy reads and streaming writes.

Reads go through `safe_open(...).get_slice`, so a caller asking for one device's block of a
tensor touches only those bytes. Every file's header is checked against its size first: a
truncated download is reported as truncated instead of surfacing as a decoder error (or,
worse, as garbage weights). Writes stream tensor by tensor into fixed-size shards, so the
exporter never holds more than one tensor in host memory.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Callable, Iterable, Sequence

import ml_dtypes
import numpy as np
from safetensors import safe_open
from tqdm.auto import tqdm

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
_HEADER_LIMIT = 100 * 2**20  # safetensors' own cap on the JSON header


def read_header(path: Path) -> dict:
    """The JSON header of one .safetensors file, after checking the file holds all it promises."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: truncated safetensors file ({size} bytes, too short for a header)")
        (n,) = struct.unpack("<Q", head)
        if n > _HEADER_LIMIT:
            raise ValueError(f"{path}: not a safetensors file (header length {n} is implausible)")
        if 8 + n > size:
            raise ValueError(f"{path}: truncated safetensors file: header needs {8 + n} bytes, file has {size}")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ValueError(f"{path}: corrupt safetensors header: {e}") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ValueError(f"{path}: truncated safetensors file: header describes {8 + n + end} bytes "
                         f"of header and tensor data, file has {size}")
    return header


class SafetensorsReader:
    """Lazy access to the tensors of a checkpoint directory (or one file), by tensor name."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.is_file():
            files = {path.name: path}
            weight_map = None
        elif (path / INDEX_FILE).is_file():
            index = json.loads((path / INDEX_FILE).read_text())
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{path / INDEX_FILE}: no 'weight_map' object")
            files = {name: path / name for name in sorted(set(weight_map.values()))}
        elif (path / SINGLE_FILE).is_file():
            files = {SINGLE_FILE: path / SINGLE_FILE}
            weight_map = None
        else:
            raise FileNotFoundError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE} (is this a Hugging Face "
                                    "checkpoint directory with safetensors weights?)")
        for name, file in files.items():
            if not file.is_file():
                raise FileNotFoundError(f"{file}: shard listed in {INDEX_FILE} is missing")
        self._headers = {name: read_header(file) for name, file in files.items()}
        self._files = files
        self._where: dict[str, str] = {}
        for fname, header in self._headers.items():
            for tensor in header:
                if tensor != "__metadata__":
                    self._where[tensor] = fname
        if weight_map is not None:
            for tensor, fname in weight_map.items():
                if self._where.get(tensor) != fname:
                    raise ValueError(f"{path / INDEX_FILE} lists {tensor!r} in {fname}, but that file "
                                     "does not contain it (incomplete or mismatched shard)")
        self._stack = contextlib.ExitStack()
        self._open: dict[str, object] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._stack.close()
        self._open.clear()

    def names(self) -> list[str]:
        return sorted(self._where)

    def _entry(self, name: str) -> dict:
        if name not in self._where:
            raise KeyError(f"tensor {name!r} is not in the checkpoint")
        return self._headers[self._where[name]][name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entry(name)["shape"])

    def dtype(self, name: str) -> str:
        return self._entry(name)["dtype"]

    def read(self, name: str, index: Sequence[slice] | None = None) -> np.ndarray:
        """The tensor, or only the block `index` (one slice per dimension) of it."""
        fname = self._where.get(name)
        if fname is None:
            raise KeyError(f"tensor {name!r} is not in the checkpoint")
        if fname not in self._open:
            self._open[fname] = self._stack.enter_context(safe_open(str(self._files[fname]), framework="numpy"))
        handle = self._open[fname]
        if index is None:
            return np.asarray(handle.get_tensor(name))
        return np.asarray(handle.get_slice(name)[tuple(index)])


def parse_size(size: int | str) -> int:
    """'2GB' -> 2e9 bytes, '500MiB' -> 500 * 2**20 (the Hugging Face convention)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, re.IGNORECASE)
    if not m:
        raise ValueError(f"max_shard_size={size!r}: use an int or a string like '2GB' or '500MiB'")
    unit = (m.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(float(m.group(1)) * scale)


def dtype_name(dtype) -> str:
    try:
        return _NAMES[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"dtype {dtype} has no safetensors name") from None


def plan_shards(entries: Sequence[tuple[str, tuple[int, ...], str]], max_shard_size: int | str
                ) -> list[list[tuple[str, tuple[int, ...], str]]]:
    """Greedy packing of (name, shape, dtype-name) in order into shards of at most max_shard_size
    bytes (a single larger tensor gets a shard of its own, as Hugging Face does)."""
    limit = parse_size(max_shard_size)
    shards, current, used = [], [], 0
    for entry in entries:
        nbytes = _nbytes(entry)
        if current and used + nbytes > limit:
            shards.append(current)
            current, used = [], 0
        current.append(entry)
        used += nbytes
    if current:
        shards.append(current)
    return shards


def _nbytes(entry) -> int:
    _, shape, dt = entry
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dt]).itemsize


def write_shards(out_dir: Path, shards: list[list[tuple[str, tuple[int, ...], str]]],
                 fetch: Callable[[str], np.ndarray | None]) -> dict:
    """Writes the planned shards, asking `fetch(name)` for each tensor in turn; returns the index.

    `fetch` may return None on processes that do not write (multi-host: only process 0 writes, but
    every process must take part in gathering each tensor, in the same order).
    """
    weight_map, total = {}, 0
    n = len(shards)
    for k, shard in enumerate(tqdm(shards, desc="writing shards", unit="shard", disable=None)):
        fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, dt in shard:
            nbytes = _nbytes((name, shape, dt))
            header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = fname
        total += offset
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the format aligns tensor data to 8 bytes
        f = None
        try:
            for name, shape, dt in shard:
                value = fetch(name)
                if value is None:
                    continue
                if f is None:
                    f = open(out_dir / fname, "wb")
                    f.write(struct.pack("<Q", len(blob)) + blob)
                value = np.ascontiguousarray(value, dtype=_DTYPES[dt])
                if value.shape != tuple(shape):
                    raise ValueError(f"export of {name}: got shape {value.shape}, planned {tuple(shape)}")
                value.tofile(f)
        finally:
            if f is not None:
                f.close()
    return {"metadata": {"total_size": total}, "weight_map": weight_map}


def write_index(out_dir: Path, index: dict) -> None:
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def shard_entries(names_shapes: Iterable[tuple[str, tuple[int, ...]]], dtype) -> list:
    dt = dtype_name(dtype)
    return [(name, tuple(shape), dt) for name, shape in names_shapes]
