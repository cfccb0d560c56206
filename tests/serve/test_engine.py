"""The engine's batching and the app's error handling, in process, over a fake sampler (no model,
no compilation): which requests share a call, per-row max_tokens cuts, seeded row ids, and an
exception in one call failing that call's requests only."""
from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import Future
from types import SimpleNamespace

import numpy as np
import openai
import pytest

from ledex_jax.serve import Engine, InvalidRequest, Params, batching
from ledex_jax.serve.engine import Job
from tests.serve.serve_helpers import assert_openai_error, client, raw_post

FAIL = "!"  # a prompt containing it makes the fake sampler raise
EOS = 2


class CharTokenizer:
    """One id per character (ord), EOS id 2; enough of the HF tokenizer API for the server."""
    eos_token_id, bos_token_id, pad_token_id = EOS, None, 0
    chat_template = "fake"

    def __len__(self):
        return 256

    def encode(self, text, add_special_tokens=True):
        return [ord(c) % 256 for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == EOS))

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class FakeSampler:
    """Row r writes random letters seeded by its row id; a prompt ending in '#' ends with EOS after 3 letters.
    Records every call's shape and knobs."""

    def __init__(self, tokenizer=None, max_prompt_len=64, context=256):
        self.tokenizer = tokenizer or CharTokenizer()
        self.config = SimpleNamespace(max_position_embeddings=context, eos_token_id=EOS)
        self.max_prompt_len = max_prompt_len
        self.traces, self.calls = Counter(), []

    def decode_text(self, ids):
        return self.tokenizer.decode(ids)

    def generate(self, prompts, max_new_tokens, temperature=1.0, top_p=1.0, greedy=False, stop=None, seed=0,
                 row_ids=None, max_batch=None, **_):
        self.calls.append(dict(rows=len(prompts), max_batch=max_batch, max_new=max_new_tokens, greedy=greedy,
                               temperature=temperature, top_p=top_p, stop=stop, seed=seed, row_ids=list(row_ids)))
        if any(ord(FAIL) in p for p in prompts):
            raise RuntimeError("boom")
        n = len(prompts)
        tokens = np.stack([np.random.default_rng(row_ids[r]).integers(97, 123, max_new_tokens) for r in range(n)])
        tokens = tokens.astype(np.int32)
        lengths = np.full(n, max_new_tokens, np.int32)
        stopped = np.zeros(n, bool)
        texts = []
        for r, p in enumerate(prompts):
            if p[-1] == ord("#") and max_new_tokens > 3:
                tokens[r, 3], lengths[r], stopped[r] = EOS, 4, True
            text = self.decode_text(tokens[r, :lengths[r]])
            for s in stop or []:
                if s in text:
                    at = text.index(s)
                    text, lengths[r], stopped[r] = text[:at], at + len(s), True
            texts.append(text)
        return SimpleNamespace(tokens=tokens, logprobs=-np.ones(tokens.shape, np.float32), lengths=lengths,
                               stopped=stopped, texts=texts)


def ids(text):
    return [ord(c) for c in text]


def submit_all(engine, jobs):
    """Submits before the engine thread starts, so all of them are queued for its first calls."""
    futures = [engine.submit(ids(p), params) for p, params in jobs]
    engine.start()
    try:
        return [f.result(30) if not f.exception(30) else f.exception() for f in futures]
    finally:
        engine.stop()


def test_buckets_and_row_ids():
    assert [batching.batch_bucket(r, 32) for r in (1, 2, 3, 5, 16, 17, 40)] == [1, 2, 4, 8, 16, 32, 32]
    assert batching.batch_bucket(20, 24) == 24
    assert [batching.new_tokens_bucket(t, 1000) for t in (1, 16, 17, 100, 128, 129)] == [16, 16, 32, 128, 128, 256]
    assert batching.new_tokens_bucket(100, room=110) == 100  # the bucket would pass the context
    assert batching.row_id(7, 0) == batching.row_id(7, 0) != batching.row_id(7, 1) != batching.row_id(8, 1)
    assert 0 <= batching.row_id(None, 0) < 2 ** 31
    assert batching.group_key(0.0, 0.5, ["b", "a", ""]) == batching.group_key(0.0, 1.0, ["a", "b"])
    assert batching.group_key(0.7, 1.0, []) != batching.group_key(0.7, 0.9, [])


def test_next_call_takes_oldest_group_up_to_max_batch():
    key_a, key_b = batching.group_key(0, 1, []), batching.group_key(1, 1, [])
    job = lambda key, n: Job([1], Params(4, n=n), key, Future())  # noqa: E731
    pending = [job(key_a, 3), job(key_b, 1), job(key_a, 3), job(key_a, 3), job(key_a, 1)]
    assert batching.next_call(pending, 8) == pending[0:1] + pending[2:3]
    assert batching.next_call(pending[1:], 8) == [pending[1]]
    assert batching.next_call([job(key_a, 20)], 8)[0].n == 20  # too big for one call: alone
    assert batching.call_rows(pending, 8) == 6 and batching.call_rows([], 8) == 0


def test_rows_are_cut_at_their_own_max_tokens():
    sampler = FakeSampler()
    short, long, eos = submit_all(Engine(sampler, max_batch=8), [
        ("abc", Params(5, temperature=0)), ("abd", Params(20, temperature=0)), ("ab#", Params(20, temperature=0))])
    assert len(sampler.calls) == 1 and sampler.calls[0]["max_new"] == 32 and sampler.calls[0]["max_batch"] == 4
    assert len(short.choices[0].token_ids) == 5 and short.choices[0].finish_reason == "length"
    assert len(short.choices[0].text) == 5
    assert len(long.choices[0].token_ids) == 20 and long.choices[0].finish_reason == "length"
    assert eos.choices[0].finish_reason == "stop" and eos.choices[0].token_ids[-1] == EOS
    assert eos.choices[0].text == eos.choices[0].text.strip() and len(eos.choices[0].text) == 3
    assert short.prompt_tokens == 3


def test_calls_group_by_knobs_and_stop_strings():
    sampler = FakeSampler()
    results = submit_all(Engine(sampler, max_batch=8), [
        ("a", Params(4, temperature=0)), ("b", Params(4, temperature=0.7)), ("c", Params(4, temperature=0, top_p=0.5)),
        ("d", Params(4, temperature=0.7, stop=("x",))), ("e", Params(4, temperature=0.7, top_p=0.9))])
    assert all(r.choices for r in results)
    knobs = [(c["greedy"], c["temperature"], c["top_p"], c["stop"], c["rows"]) for c in sampler.calls]
    assert knobs == [(True, 0.0, 1.0, None, 2), (False, 0.7, 1.0, None, 1), (False, 0.7, 1.0, ["x"], 1),
                     (False, 0.7, 0.9, None, 1)]


def test_n_choices_seeds_and_splitting_over_max_batch():
    sampler = FakeSampler()
    a, b, c = submit_all(Engine(sampler, max_batch=4), [
        ("p", Params(4, n=3, seed=11)), ("q", Params(4, n=3, seed=11)), ("r", Params(4, n=6, seed=5))])
    assert [call["rows"] for call in sampler.calls] == [3, 3, 6]
    assert [call["max_batch"] for call in sampler.calls] == [4, 4, 4]
    assert sampler.calls[0]["row_ids"] == sampler.calls[1]["row_ids"] == [batching.row_id(11, i) for i in range(3)]
    assert [ch.text for ch in a.choices] == [ch.text for ch in b.choices]
    assert len({ch.text for ch in a.choices}) == 3 and len(c.choices) == 6
    assert all(call["seed"] == batching.CALL_SEED for call in sampler.calls)


def test_a_burst_of_requests_shares_one_call():
    """Requests arriving a few ms apart at an idle engine wait for each other (batch_gap_s)."""
    sampler = FakeSampler()
    engine = Engine(sampler, max_batch=8, batch_wait_s=2.0, batch_gap_s=0.5).start()
    try:
        futures = []
        for i in range(4):
            futures.append(engine.submit(ids(f"p{i}"), Params(4, temperature=0)))
            time.sleep(0.02)
        assert all(f.result(30).choices for f in futures)
    finally:
        engine.stop()
    assert [c["rows"] for c in sampler.calls] == [4]
    assert engine.stats()["rows_per_call"] == {"4": 1}


def test_warmup_runs_every_batch_size():
    sampler = FakeSampler()
    Engine(sampler, max_batch=6).warmup([5, 9], max_tokens=20)
    assert [(c["rows"], c["max_batch"], c["max_new"]) for c in sampler.calls] == [
        (r, r, 32) for r in (1, 2, 4, 6)] * 2


def test_failed_call_fails_only_its_requests_and_engine_lives():
    sampler = FakeSampler()
    engine = Engine(sampler, max_batch=8)
    bad, good = submit_all(engine, [("x!", Params(4, temperature=0.5)), ("ok", Params(4, temperature=0))])
    assert isinstance(bad, RuntimeError) and good.choices[0].text
    engine.start()
    try:
        assert engine.submit(ids("again"), Params(4)).result(30).choices
    finally:
        engine.stop()
    assert engine.stats()["failed_calls"] == 1


def test_check_refuses_what_the_sampler_cannot_run():
    engine = Engine(FakeSampler(max_prompt_len=10, context=40), max_tokens_limit=32)
    cases = [([], Params(4), "prompt"), ([1] * 11, Params(4), "prompt"), ([1] * 5, Params(0), "max_tokens"),
             ([1] * 5, Params(33), "max_tokens"), ([1] * 10, Params(31), "max_tokens"),
             ([1], Params(4, n=0), "n"), ([1], Params(4, temperature=-1), "temperature"),
             ([1], Params(4, top_p=0), "top_p")]
    for prompt, params, param in cases:
        with pytest.raises(InvalidRequest) as err:
            engine.submit(prompt, params)
        assert err.value.param == param, (prompt, params)


# --- the app, in process, with uvicorn in a thread --------------------------------------
@pytest.fixture
def serve():
    """serve(sampler, **engine_kwargs) -> base URL of a running app; everything stops at the end."""
    import uvicorn

    from ledex_jax.serve import create_app
    running = []

    def start(sampler, **kwargs):
        engine = Engine(sampler, **kwargs).start()
        server = uvicorn.Server(uvicorn.Config(create_app(engine, "fake"), host="127.0.0.1", port=0,
                                               log_level="critical"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((engine, server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"

    yield start
    for engine, server, thread in running:
        server.should_exit = True
        thread.join(10)
        engine.stop()


def test_app_answers_500_for_a_failed_call_and_keeps_serving(serve):
    base = serve(FakeSampler(), max_batch=8, batch_wait_s=0.5, batch_gap_s=0.5)
    api = client(base)
    results = {}

    def send(name, prompt, temperature):
        try:
            results[name] = api.completions.create(model="fake", prompt=prompt, max_tokens=4, temperature=temperature)
        except openai.APIStatusError as exc:
            results[name] = exc
    threads = [threading.Thread(target=send, args=a) for a in
               [("bad", "boom!", 0.5), ("same_call", "fine", 0.5), ("other_call", "fine", 0.0)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for name in ("bad", "same_call"):  # one generate call: both fail
        assert isinstance(results[name], openai.InternalServerError), results[name]
        assert_openai_error(results[name].status_code, {"error": results[name].body}, 500)
        assert "boom" in results[name].body["message"]
    assert results["other_call"].choices[0].text
    assert api.completions.create(model="fake", prompt="later", max_tokens=4).choices[0].text


def test_app_chat_without_template_and_unknown_model(serve):
    tok = CharTokenizer()
    tok.chat_template = None
    base = serve(FakeSampler(tok), max_batch=4, batch_wait_s=0, batch_gap_s=0)
    status, body = raw_post(base + "/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(status, body, 400, "messages")
    assert body["error"]["code"] == "no_chat_template" and "chat template" in body["error"]["message"]
    status, body = raw_post(base + "/completions", {"model": "nope", "prompt": "hi"})
    assert_openai_error(status, body, 404, "model")
    out = client(base).completions.create(model="fake", prompt="hi", max_tokens=3, stop="zz")
    assert out.usage.completion_tokens == 3
