"""Prompt text and the answer mask: exact StarChat text, the answer mask covers exactly the answer
tokens (end marker included) for every format and style, and the prompt a sampler builds is the
prefix training saw."""
import pytest

from ledex_jax.data import prompts as P
from ledex_jax.data.records import FORMATS, read_sft_jsonl
from sft_fixtures.tiny_tokenizer import DEMO, merging_tokenizer, smollm2, tiny_bpe

REC = {"id": "x", "problem": "Write f.\nassert f(1) == 2", "wrong_code": "def f(x):\n    return x\n",
       "feedback": "The code above fails the given unit test:\nassert f(1) == 2\n# Actual output: 1",
       "explanation": "It forgets to add one.", "refined_code": "def f(x):\n    return x + 1",
       "format": "refine", "source": "t/1"}


def decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def test_starchat_text_exactly():
    head = "<|user|>\nWrite f.\nassert f(1) == 2<|end|>\n<|assistant|>\n"
    history = (head + "```python\ndef f(x):\n    return x\n```<|end|>\n<|user|>\nThe code above fails the given "
               "unit test:\nassert f(1) == 2\n# Actual output: 1\n\n")
    fixed = "```python\ndef f(x):\n    return x + 1\n```<|end|>"
    assert P.render(REC, "codegen") == (head, fixed)
    assert P.render(REC, "refine") == (history + P.REFINE_INSTRUCTION + "<|end|>\n<|assistant|>\n", fixed)
    assert P.render(REC, "explain_refine") == (
        history + P.EXPLAIN_REFINE_INSTRUCTION + "<|end|>\n<|assistant|>\n", "It forgets to add one.\n\n" + fixed)


def tokenizers():
    return {"tiny": tiny_bpe(), "tiny_bos": tiny_bpe(add_bos=True), "smollm2": smollm2()}


@pytest.mark.parametrize("style", P.STYLES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_mask_covers_exactly_the_answer(fmt, style):
    recs = [r for r in read_sft_jsonl(DEMO) if r.format == fmt][:4] + [REC]
    for name, tok in tokenizers().items():
        for rec in recs:
            parts = P.render(rec, fmt, style, tok)
            ids, mask = P.encode_example(tok, parts, style)
            n = mask.count(0)
            assert mask == [0] * n + [1] * (len(ids) - n), name
            assert ids[:n] == P.encode_prompt(tok, P.build_prompt(rec, fmt, style, tok), style), name
            assert decode(tok, ids[n:]) == parts.answer, name
            end = "<|end|>" if style == "starchat" else tok.eos_token
            assert parts.answer.endswith(end) and P.answer_content(rec, fmt) in parts.answer
            prompt_text = decode(tok, ids[:n])
            if ids[0] == tok.bos_token_id and style == "starchat":
                assert name == "tiny_bos" and ids.count(tok.bos_token_id) == 1
                prompt_text = prompt_text[len(tok.bos_token):]
            assert prompt_text == parts.prompt, name


def test_smollm2_chat_template_answer_is_one_turn():
    tok = smollm2()
    parts = P.render(REC, "explain_refine", "chat_template", tok)
    assert parts.prompt.endswith("<|im_start|>assistant\n")
    assert parts.answer == "It forgets to add one.\n\n```python\ndef f(x):\n    return x + 1\n```<|im_end|>"
    assert parts.prompt.count("<|im_start|>assistant\n```python\ndef f(x):\n    return x\n```<|im_end|>") == 1


def test_boundary_merge_falls_back_to_separate_answer_tokens():
    parts = P.render(REC, "refine", "starchat")
    tok = merging_tokenizer([parts.prompt, parts.answer])
    prompt_ids = P.encode_prompt(tok, parts.prompt)
    joint = tok.encode(parts.prompt + parts.answer, add_special_tokens=False)
    assert joint[: len(prompt_ids)] != prompt_ids  # the tokenizer does merge across the boundary
    ids, mask = P.encode_example(tok, parts)
    assert ids[: len(prompt_ids)] == prompt_ids and mask.count(0) == len(prompt_ids)
    assert decode(tok, ids[len(prompt_ids):]) == parts.answer


def test_joint_tokens_when_the_prefix_holds():
    tok = tiny_bpe()
    parts = P.render(REC, "refine", "starchat")
    ids, _ = P.encode_example(tok, parts)
    assert ids == tok.encode(parts.prompt + parts.answer, add_special_tokens=False)


def test_generation_prompt_needs_no_answer_fields():
    bare = {k: REC[k] for k in ("problem", "wrong_code", "feedback")}
    for fmt in FORMATS:
        assert P.build_prompt(bare, fmt) == P.render(REC, fmt).prompt
        assert P.build_prompt(bare, fmt, "chat_template", tiny_bpe()) == P.render(REC, fmt, "chat_template",
                                                                                 tiny_bpe()).prompt


def test_template_without_end_marker_gets_eos():
    tok = tiny_bpe()
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    parts = P.render(REC, "refine", "chat_template", tok)
    assert parts.answer == P.answer_content(REC, "refine") + "\n<|im_end|>"


def test_errors_name_the_fix():
    tok = tiny_bpe()
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' %}A: {% else %}U: {% endif %}"
                         "{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}")
    with pytest.raises(P.PromptError, match="not a prefix.*style='starchat'"):
        P.render(REC, "refine", "chat_template", tok)
    with pytest.raises(P.PromptError, match="needs a tokenizer with a chat template"):
        P.build_prompt(REC, "refine", "chat_template")
    with pytest.raises(P.PromptError, match="format 'fix' is unknown"):
        P.build_prompt(REC, "fix")
    with pytest.raises(P.PromptError, match="style 'chatml' is unknown"):
        P.build_prompt(REC, "refine", "chatml")


def test_split_answer_inverts_the_answer_format():
    assert P.split_answer(P.answer_content(REC, "explain_refine")) == ("It forgets to add one.", REC["refined_code"])
    assert P.split_answer(P.answer_content(REC, "refine") + "<|end|>") == ("", REC["refined_code"])
    assert P.split_answer("It is wrong.\n```python\ndef f(x):") == ("It is wrong.\n```python\ndef f(x):", None)
