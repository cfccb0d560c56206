"""Tokenizers for a Hugging Face directory or a GGUF file (vocabulary, merges, special tokens
and chat template all come from the file's metadata)."""
from __future__ import annotations

import os


def load_tokenizer(path: str | os.PathLike):
    """A transformers fast tokenizer (with the chat template where the checkpoint has one)."""
    from transformers import AutoTokenizer

    from ledex_jax.models.hub import TOKENIZER_FILES, resolve
    path = resolve(path, TOKENIZER_FILES)
    if path.suffix == ".gguf":
        from ledex_jax.models.gguf_io import open_gguf
        open_gguf(path)  # reports a missing or truncated file clearly before transformers parses it
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: neither a tokenizer directory nor a .gguf file")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise FileNotFoundError(f"{path}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(str(path))
