"""A seqio Vocabulary over a Hugging Face tokenizer, in Python and in TF graphs.

Ids are the tokenizer's own, unshifted, so the model's embedding table applies as is. seqio's
convention that id 0 is padding does not hold for most Hugging Face vocabularies (0 is `<unk>` or
`<|endoftext|>`); this pipeline never infers padding from ids (batches carry ``segment_ids``), and
``decode``/``decode_tf`` here stop after the first EOS instead of dropping zeros.

TF ops run the (Rust) tokenizer through ``tf.numpy_function``: correct for any tokenizer and fast
enough for SFT data (a few thousand examples per second per core), but not serialisable into a
SavedModel and bound to the Python process that built the graph.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import seqio
import tensorflow as tf


class HFVocabulary(seqio.Vocabulary):
    def __init__(self, tokenizer, extra_ids: int = 0):
        super().__init__(extra_ids=extra_ids)
        self._tokenizer = tokenizer

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def bos_id(self) -> int | None:
        return self._tokenizer.bos_token_id

    @property
    def eos_id(self) -> int | None:
        return self._tokenizer.eos_token_id

    @property
    def unk_id(self) -> int | None:
        return self._tokenizer.unk_token_id

    @property
    def _base_vocab_size(self) -> int:
        return len(self._tokenizer)

    # --- Python --------------------------------------------------------------------------------
    def _encode(self, s: str) -> Sequence[int]:
        return list(self._tokenizer.encode(s, add_special_tokens=False))

    def _decode(self, ids) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False)

    # --- TF --------------------------------------------------------------------------------------
    def _encode_batch(self, strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        texts = [s.decode("utf-8") for s in strings.reshape(-1)]
        ids = self._tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        flat = np.fromiter((i for row in ids for i in row), np.int32)
        return flat, np.asarray([len(row) for row in ids], np.int64)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """A scalar string gives int32 ids [n]; a vector of strings a RaggedTensor [batch, None]."""
        s = tf.convert_to_tensor(s, tf.string)
        if s.shape.rank not in (0, 1):
            raise ValueError(f"encode_tf takes a scalar or a vector of strings; got shape {s.shape}")
        flat, lengths = tf.numpy_function(self._encode_batch, [tf.reshape(s, [-1])], [tf.int32, tf.int64],
                                          stateful=False)
        flat.set_shape([None])
        lengths.set_shape([None])
        if s.shape.rank == 0:
            return flat
        return tf.RaggedTensor.from_row_lengths(flat, lengths)

    def _decode_rows(self, ids: np.ndarray) -> np.ndarray:
        rows = ids.reshape(-1, ids.shape[-1]) if ids.ndim else ids.reshape(1, 1)
        out = []
        for row in rows.tolist():
            if self.eos_id is not None and self.eos_id in row:
                row = row[: row.index(self.eos_id) + 1]  # seqio zeroed what follows; it is not text
            out.append(self._decode(row).encode("utf-8"))
        return np.asarray(out, dtype=object).reshape(ids.shape[:-1])

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """ids [..., n] -> strings [...], each cut after its first EOS."""
        ids = tf.convert_to_tensor(ids)
        out = tf.numpy_function(self._decode_rows, [ids], tf.string, stateful=False)
        out.set_shape(ids.shape[:-1])
        return out

    def __eq__(self, other) -> bool:
        if not isinstance(other, HFVocabulary):
            return False
        a, b = self._tokenizer, other._tokenizer
        return a is b or (self.extra_ids == other.extra_ids and len(a) == len(b) and a.get_vocab() == b.get_vocab())

    def __hash__(self) -> int:
        return hash((len(self._tokenizer), self.extra_ids))

    def __str__(self) -> str:
        return f"HFVocabulary({getattr(self._tokenizer, 'name_or_path', '') or type(self._tokenizer).__name__}, " \
               f"size={self.vocab_size})"
