"""Shared by the collection tests."""
from pathlib import Path

OUTPUTS = ("sft.jsonl", "rl.jsonl", "stats.json")


def outputs(workdir):
    """The export's files, as bytes (they must match byte for byte across runs)."""
    return {name: (Path(workdir) / name).read_bytes() for name in OUTPUTS}
