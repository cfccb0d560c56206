"""Prompts for SFT, PPO sampling and evaluation: one place decides the text and its tokens.

Two styles:
- "starchat" (base models, LEDEX.md §2):
  ``<|user|>\\n{problem}<|end|>\\n<|assistant|>\\n{wrong code}<|end|>\\n<|user|>\\n{feedback +
  instruction}<|end|>\\n<|assistant|>\\n{answer}<|end|>``
- "chat_template" (instruct models): the same messages through ``tokenizer.apply_chat_template``.

Three formats: "codegen" (problem -> code), "refine" (answer = fixed code) and "explain_refine"
(answer = explanation, then fixed code). Code is always in a ```python fence, the wrong code in
the history too (that is how the model wrote it). The answer ends with the end-of-turn marker
(``<|end|>`` or the template's EOS) so the model learns to stop.

``render`` gives (prompt, answer) text; ``encode_example`` gives token ids and a mask that is 1
exactly on the answer's tokens; ``build_prompt``/``encode_prompt`` give what a sampler feeds the
model, ending where the answer starts. No TF, no JAX; a tokenizer is any Hugging Face tokenizer.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from ledex_jax.data.records import FORMATS

STYLES = ("starchat", "chat_template")
END = "<|end|>"  # StarChat end-of-turn marker
REFINE_INSTRUCTION = ("Please fix the code above. Write the complete corrected program in a "
                      "```python code block.")
EXPLAIN_REFINE_INSTRUCTION = ("Please explain why the code above is wrong, then fix it. Write the "
                              "explanation first, then the complete corrected program in a ```python "
                              "code block.")
INSTRUCTIONS = {"refine": REFINE_INSTRUCTION, "explain_refine": EXPLAIN_REFINE_INSTRUCTION}


class PromptError(ValueError):
    """A format/style/tokenizer combination that cannot produce a well-formed prompt."""


class PromptParts(NamedTuple):
    prompt: str  # everything the model is conditioned on, ending where the answer starts
    answer: str  # what the model must produce, including the end-of-turn marker


def _field(record: Any, name: str) -> str:
    value = record.get(name, "") if isinstance(record, Mapping) else getattr(record, name, "")
    return value or ""


def _check(fmt: str, style: str) -> None:
    if fmt not in FORMATS:
        raise PromptError(f"format {fmt!r} is unknown; use one of {', '.join(map(repr, FORMATS))}")
    if style not in STYLES:
        raise PromptError(f"style {style!r} is unknown; use one of {', '.join(map(repr, STYLES))}")


def code_block(code: str) -> str:
    return "```python\n" + code.strip("\n").rstrip() + "\n```"


def answer_content(record: Any, fmt: str) -> str:
    """The answer without the end marker: fenced code, preceded by the explanation for explain_refine."""
    code = code_block(_field(record, "refined_code"))
    if fmt == "explain_refine":
        return _field(record, "explanation").strip() + "\n\n" + code
    return code


def messages(record: Any, fmt: str, with_answer: bool = True, shots=()) -> list[dict[str, str]]:
    """The chat turns; with ``with_answer`` the last one is the assistant answer (the only turn
    trained on). ``record`` is an SFTRecord or a mapping; sampling needs no answer fields.
    ``shots``: complete examples of the same format, shown first (few-shot prompting)."""
    _check(fmt, "starchat")
    turns = [t for shot in shots for t in messages(shot, fmt)]
    turns.append({"role": "user", "content": _field(record, "problem").strip()})
    if fmt != "codegen":
        feedback = _field(record, "feedback").strip()
        turns += [{"role": "assistant", "content": code_block(_field(record, "wrong_code"))},
                  {"role": "user", "content": f"{feedback}\n\n{INSTRUCTIONS[fmt]}"}]
    if with_answer:
        turns.append({"role": "assistant", "content": answer_content(record, fmt)})
    return turns


def _starchat(turns: list[dict[str, str]]) -> str:
    return "".join(f"<|{t['role']}|>\n{t['content']}{END}\n" for t in turns)


def require_template(tokenizer) -> None:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise PromptError("style 'chat_template' needs a tokenizer with a chat template; pass the model's "
                          "tokenizer, or use style='starchat' for base models")


def build_prompt(record: Any, fmt: str, style: str = "starchat", tokenizer=None, shots=()) -> str:
    """The prompt text for generation, ending exactly where the answer starts."""
    _check(fmt, style)
    return prompt_from_turns(messages(record, fmt, with_answer=False, shots=shots), style, tokenizer)


def prompt_from_turns(turns: list[dict[str, str]], style: str = "starchat", tokenizer=None) -> str:
    """Chat turns (ending with a user turn) as generation-prompt text in ``style``."""
    if style not in STYLES:
        raise PromptError(f"style {style!r} is unknown; use one of {', '.join(map(repr, STYLES))}")
    if style == "starchat":
        return _starchat(turns) + "<|assistant|>\n"
    require_template(tokenizer)
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


def render(record: Any, fmt: str, style: str = "starchat", tokenizer=None) -> PromptParts:
    """(prompt, answer) text for training; prompt == build_prompt(record, fmt, style, tokenizer)."""
    prompt = build_prompt(record, fmt, style, tokenizer)
    if style == "starchat":
        return PromptParts(prompt, answer_content(record, fmt) + END)
    full = tokenizer.apply_chat_template(messages(record, fmt), tokenize=False)
    if not full.startswith(prompt):
        raise PromptError("the chat template renders the conversation differently from its generation "
                          "prompt (the prompt is not a prefix of the full chat), so the answer cannot be "
                          "located; use style='starchat' for this tokenizer")
    answer = full[len(prompt):]
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos in answer:
        answer = answer[: answer.rindex(eos) + len(eos)]  # drop what the template adds after the turn
    elif eos:
        answer += eos
    else:
        raise PromptError("the tokenizer has no eos_token, so the answer would have no end marker; set "
                          "tokenizer.eos_token to the template's end-of-turn token")
    return PromptParts(prompt, answer)


@functools.lru_cache(maxsize=16)
def _adds_bos(tokenizer) -> bool:
    """Whether plain encoding prepends BOS (Llama-style tokenizers): then StarChat prompts start with it."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    with_special = tokenizer.encode("a", add_special_tokens=True)
    return bool(with_special) and with_special[0] == bos and tokenizer.encode("a", add_special_tokens=False)[:1] != [bos]


def encode_prompt(tokenizer, text: str, style: str = "starchat") -> list[int]:
    """Token ids of a prompt exactly as training saw them. Chat templates write their own BOS text;
    a StarChat prompt gets BOS when the tokenizer adds one by default."""
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    if style == "starchat" and _adds_bos(tokenizer):
        ids.insert(0, tokenizer.bos_token_id)
    return ids


def encode_example(tokenizer, parts: PromptParts, style: str = "starchat") -> tuple[list[int], list[int]]:
    """(ids, answer_mask): mask is 1 exactly on the answer's tokens (end marker included).

    The prompt's ids are what a sampler feeds the model, so they must be a prefix of the example.
    Tokenizing prompt+answer together gives the natural tokens when that holds; where a tokenizer
    merges across the boundary it does not, and the answer is tokenized on its own instead.
    """
    prompt_ids = encode_prompt(tokenizer, parts.prompt, style)
    ids = encode_prompt(tokenizer, parts.prompt + parts.answer, style)
    if ids[: len(prompt_ids)] != prompt_ids:
        ids = prompt_ids + list(tokenizer.encode(parts.answer, add_special_tokens=False))
    return ids, [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))


_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def split_answer(text: str) -> tuple[str, str | None]:
    """(explanation, code) of a generated answer: the code is the last complete ```python block,
    the explanation what precedes it; code is None when no complete block was written."""
    blocks = list(_FENCE.finditer(text))
    if not blocks:
        return text.strip(), None
    last = blocks[-1]
    return text[: last.start()].strip(), last.group(1).rstrip("\n")


def code_block_start(text: str) -> int | None:
    """Character index where the block `split_answer` takes as the code starts (its opening
    fence), or None: everything before it is the explanation."""
    blocks = list(_FENCE.finditer(text))
    return blocks[-1].start() if blocks else None
