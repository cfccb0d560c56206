"""`scripts/serve.py` end to end: a subprocess serving a tiny random Llama (real SmolLM2
tokenizer), talked to over real HTTP with the official `openai` client. One server for the module.
"""
from __future__ import annotations

import threading

import openai
import pytest

from tests.serve.serve_helpers import assert_openai_error, client, get_json, raw_post, start_ours

NAME = "tiny-served"
MAX_BATCH = 8
MAX_PROMPT_LEN = 64


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    proc, base = start_ours(tiny_model_dir, f"--served_model_name={NAME}", f"--max_batch={MAX_BATCH}",
                            f"--max_prompt_len={MAX_PROMPT_LEN}", "--max_tokens_limit=128")
    yield base
    proc.stop()
    proc.remove_log()


@pytest.fixture(scope="module")
def api(server):
    return client(server)


def chat(api, content: str, **kwargs):
    return api.chat.completions.create(model=NAME, messages=[{"role": "user", "content": content}], **kwargs)


def in_parallel(fns):
    """Runs the callables at the same moment (a barrier), returns their results in order."""
    barrier, results, errors = threading.Barrier(len(fns)), [None] * len(fns), []

    def run(i, fn):
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    return results


def test_models_list_and_retrieve(api):
    models = api.models.list()
    assert [m.id for m in models.data] == [NAME]
    assert api.models.retrieve(NAME).id == NAME
    with pytest.raises(openai.NotFoundError) as err:
        api.models.retrieve("other-model")
    assert err.value.body["code"] == "model_not_found"


def test_completion_shape_usage_and_logprobs(api):
    out = api.completions.create(model=NAME, prompt="def add(a, b):", max_tokens=5, temperature=0, logprobs=1)
    assert out.object == "text_completion" and out.model == NAME and out.id
    (choice,) = out.choices
    assert choice.index == 0 and choice.finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens > 0 and 1 <= out.usage.completion_tokens <= 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == len(lp.top_logprobs)
    assert len(lp.tokens) in (out.usage.completion_tokens, out.usage.completion_tokens - 1)  # EOS not listed
    assert all(x <= 0 for x in lp.token_logprobs)
    if choice.finish_reason == "length":
        assert out.usage.completion_tokens == 5 and "".join(lp.tokens) == choice.text


def test_chat_n_choices_seeded_and_logprobs(api):
    out = chat(api, "Write a function that adds two numbers.", max_tokens=12, n=3, seed=7, temperature=1.0,
               logprobs=True, top_logprobs=1)
    assert out.object == "chat.completion"
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert all(c.message.role == "assistant" and isinstance(c.message.content, str) for c in out.choices)
    assert len({c.message.content for c in out.choices}) > 1, "n samples should differ"
    for c in out.choices:
        assert c.logprobs.content and all(t.logprob <= 0 and t.top_logprobs for t in c.logprobs.content)
    again = chat(api, "Write a function that adds two numbers.", max_tokens=12, n=3, seed=7, temperature=1.0)
    assert [c.message.content for c in again.choices] == [c.message.content for c in out.choices]
    # usage counts a final EOS token, which logprobs leave out (it has no text)
    assert out.usage.completion_tokens == sum(len(c.logprobs.content) + (c.finish_reason == "stop")
                                              for c in out.choices)


def test_max_completion_tokens_and_length_finish(api):
    out = chat(api, "Say something long.", max_completion_tokens=3, temperature=0)
    assert out.usage.completion_tokens <= 3
    if out.usage.completion_tokens == 3:
        assert out.choices[0].finish_reason == "length"


def test_stop_strings_cut_before_the_stop(api):
    prompt = "Once upon a time"
    full = api.completions.create(model=NAME, prompt=prompt, max_tokens=24, temperature=0)
    text = full.choices[0].text
    assert len(text) > 8, text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    expected = text[:text.index(stop)]
    cut = api.completions.create(model=NAME, prompt=prompt, max_tokens=24, temperature=0,
                                 stop=[stop, "never-appears-xyz"])
    assert cut.choices[0].text == expected
    assert cut.choices[0].finish_reason == "stop"
    single = api.completions.create(model=NAME, prompt=prompt, max_tokens=24, temperature=0, stop=stop)
    assert single.choices[0].text == expected


def test_seed_reproducible_alone_and_batched(api, server):
    def seeded():
        return chat(api, "Tell me a story.", max_tokens=16, temperature=0.9, top_p=0.95, seed=1234).choices[0].message.content

    alone = seeded()
    others = [lambda i=i: chat(api, f"Other request {i}", max_tokens=16, temperature=0.9, top_p=0.95, seed=i)
              for i in range(5)]
    before = get_json(server + "/stats")["generate_calls"]
    results = in_parallel([seeded] + others + [seeded])
    batched_calls = get_json(server + "/stats")["generate_calls"] - before
    assert results[0] == alone and results[-1] == alone
    assert batched_calls < 7, "the concurrent requests were not batched"
    different = chat(api, "Tell me a story.", max_tokens=16, temperature=0.9, top_p=0.95, seed=99)
    assert different.choices[0].message.content != alone


def test_concurrent_requests_are_batched(api, server):
    before = get_json(server + "/stats")
    prompts = [f"def f{i}(x):" for i in range(8)]
    results = in_parallel([lambda p=p: api.completions.create(model=NAME, prompt=p, max_tokens=32, temperature=0)
                           for p in prompts])
    after = get_json(server + "/stats")
    assert all(r.choices[0].text is not None and r.usage.completion_tokens >= 1 for r in results)
    calls = after["generate_calls"] - before["generate_calls"]
    assert 1 <= calls < 8, f"8 concurrent requests took {calls} generate calls"
    # each answer is what it would be alone (greedy)
    alone = api.completions.create(model=NAME, prompt=prompts[3], max_tokens=32, temperature=0)
    assert alone.choices[0].text == results[3].choices[0].text


def test_streaming_chat_matches_non_streaming(api):
    kwargs = dict(max_tokens=10, temperature=0)
    whole = chat(api, "Hello there", **kwargs).choices[0].message.content
    chunks = list(chat(api, "Hello there", stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_multiple_prompts_and_token_id_prompts(api):
    out = api.completions.create(model=NAME, prompt=["a", "b"], max_tokens=4, temperature=0, n=2)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    ids = api.completions.create(model=NAME, prompt=[1, 253, 254], max_tokens=4, temperature=0)
    assert ids.usage.prompt_tokens == 3


BAD = [  # (kwargs for completions.create, status, param)
    (dict(model="no-such-model"), 404, "model"),
    (dict(max_tokens=0), 400, "max_tokens"),
    (dict(max_tokens=-5), 400, "max_tokens"),
    (dict(max_tokens=100000), 400, "max_tokens"),
    (dict(n=0), 400, "n"),
    (dict(temperature=-0.5), 400, "temperature"),
    (dict(top_p=0.0), 400, "top_p"),
    (dict(top_p=1.5), 400, "top_p"),
    (dict(prompt="word " * 200), 400, "prompt"),
    (dict(prompt=[]), 400, "prompt"),
    (dict(prompt=[10 ** 9]), 400, "prompt"),
    (dict(frequency_penalty=1.0), 400, "frequency_penalty"),
    (dict(logprobs=99), 400, "logprobs"),
]


@pytest.mark.parametrize("kwargs,status,param", BAD, ids=[",".join(k) for k, _, _ in BAD])
def test_bad_completion_requests_get_openai_errors(api, server, kwargs, status, param):
    args = dict(model=NAME, prompt="hi", max_tokens=4)
    args.update(kwargs)
    with pytest.raises(openai.APIStatusError) as err:
        api.completions.create(**args)
    assert_openai_error(err.value.status_code, {"error": err.value.body}, status, param)


def test_bad_chat_requests_and_malformed_bodies(api, server):
    with pytest.raises(openai.BadRequestError) as err:
        chat(api, "word " * 200, max_tokens=4)
    assert err.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        chat(api, "hi", max_tokens=4, top_logprobs=2)  # top_logprobs without logprobs
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model=NAME, messages=[], max_tokens=4)
    status, body = raw_post(server + "/chat/completions", b"{not json")
    assert_openai_error(status, body, 400, None)
    status, body = raw_post(server + "/chat/completions", {"model": NAME})
    assert_openai_error(status, body, 400, "messages")
    status, body = raw_post(server + "/completions", {"model": NAME, "prompt": "x", "max_tokens": "many"})
    assert_openai_error(status, body, 400, "max_tokens")
    status, body = raw_post(server + "/no/such/route", {})
    assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}
    # the server still answers
    assert chat(api, "still there?", max_tokens=2, temperature=0).choices[0].message.content is not None
