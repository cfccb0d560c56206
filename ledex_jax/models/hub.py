"""Hub names -> local folders. A path that exists is used as it is; `org/name` (optionally
`org/name@revision`) is fetched from the Hugging Face Hub with only the files we read."""
from __future__ import annotations

import re
from pathlib import Path

TOKENIZER_FILES = ["tokenizer*", "special_tokens_map.json", "*.model", "vocab.json", "merges.txt",
                   "chat_template*", "config.json"]
MODEL_FILES = TOKENIZER_FILES + ["generation_config.json", "*.safetensors", "model.safetensors.index.json"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def resolve(path_or_repo: str | Path, allow_patterns: list[str]) -> Path:
    """A local path, or a hub repo id downloaded (or read from the local HF cache) as a snapshot."""
    path = Path(path_or_repo).expanduser()
    if path.exists():
        return path
    name = str(path_or_repo)
    if not _REPO_ID.match(name):
        raise FileNotFoundError(
            f"{name}: no such checkpoint file or directory, and not a Hugging Face Hub id (org/name)")
    repo_id, _, revision = name.partition("@")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision or None, allow_patterns=allow_patterns))
    except Exception as e:  # offline, gated, missing: say which and how to fix
        raise FileNotFoundError(
            f"{name}: not a local path, and fetching it from the Hugging Face Hub failed ({type(e).__name__}: "
            f"{e}). Pass a local checkpoint directory, or log in (`huggingface-cli login`) / go online.") from e
