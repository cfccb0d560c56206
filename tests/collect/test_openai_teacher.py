"""OpenAITeacher against a tiny fake OpenAI-compatible server on a loopback port.

The fake server is real HTTP (http.server in a thread) so the official client, our retry loop and
the thread pool are exercised end to end; it can be scripted to rate-limit, fail, hang, refuse a
prompt, ignore `n` or drop usage, and it records what it saw.
"""
from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time
import traceback

import pytest

from ledex_jax.collect.openai_teacher import OpenAITeacher
from ledex_jax.collect.teacher_api import TeacherRequest, TeacherUnavailable

FAKE_KEY = "sk-test-FAKE-0123456789abcdef-do-not-leak"
KEY_ENV = "LEDEX_TEST_OPENAI_KEY"


class FakeOpenAI:
    """Scripted chat-completions endpoint. Content of choice j is "<prompt>|seed=<seed>|j=<j>"."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen: list[dict] = []          # {"body": json, "auth": Authorization header}
        self.script: list[tuple[int, dict]] = []  # (status, headers) served first, in order
        self.always: int | None = None      # status returned for every call
        self.refuse: dict[str, int] = {}    # prompt substring -> status (400 etc.)
        self.ignore_n = False
        self.usage = True
        self.delay = 0.0
        self.hang_first = 0                 # the first k calls sleep `hang_s` (client times out)
        self.hang_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.seen.append({"body": body, "auth": self.headers.get("Authorization"),
                                      "path": self.path})
                    call = len(fake.seen)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    scripted = fake.script.pop(0) if fake.script else None
                try:
                    if call <= fake.hang_first:
                        time.sleep(fake.hang_s)
                        return
                    time.sleep(fake.delay)
                    status, headers, payload = fake.respond(body, scripted, self.headers.get("Authorization"))
                finally:
                    with fake.lock:
                        fake.in_flight -= 1
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # clients that timed out hang up; that is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def respond(self, body, scripted, auth):
        prompt = body["messages"][-1]["content"]
        status, headers = scripted if scripted else (self.always or 200, {})
        for needle, code in self.refuse.items():
            if needle in prompt:
                status = code
        if status != 200:
            # Echo the Authorization header, as a careless proxy might: the teacher must scrub it.
            error = {"message": f"scripted failure {status} for {auth}", "type": "test", "code": None}
            return status, headers, {"error": error}
        n = 1 if self.ignore_n else body.get("n", 1)
        choices = [{"index": j, "finish_reason": "stop",
                    "message": {"role": "assistant",
                                "content": None if "EMPTY" in prompt else
                                f"{prompt}|seed={body.get('seed')}|j={j}"}}
                   for j in range(n)]
        payload = {"id": "cmpl-1", "object": "chat.completion", "created": 0,
                   "model": body["model"], "choices": choices}
        if self.usage:
            payload["usage"] = {"prompt_tokens": 10, "completion_tokens": 3 * n, "total_tokens": 10 + 3 * n}
        return 200, headers, payload

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture
def make_teacher(fake, monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    made = []

    def make(**kw):
        kw = {"model": "gpt-test", "base_url": fake.url, "api_key_env": KEY_ENV, "max_concurrency": 4,
              "timeout": 5.0, "max_retries": 4, "backoff_initial": 0.001, "backoff_max": 0.01, **kw}
        teacher = OpenAITeacher(**kw)
        made.append(teacher)
        return teacher

    yield make
    for teacher in made:
        teacher.close()


def req(prompt="p", n=1, seed=7, key=None, **kw):
    kw = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 64, **kw}
    return TeacherRequest(key=key or prompt, messages=[{"role": "system", "content": "be brief"},
                                                       {"role": "user", "content": prompt}],
                          n=n, seed=seed, **kw)


# --- the happy path ---------------------------------------------------------------------------

def test_forwards_sampling_params_key_and_extra_body(fake, make_teacher):
    teacher = make_teacher(extra_body={"top_k": 20})
    [reply] = teacher.answer([req("fix it", n=3, seed=1234, temperature=0.8, top_p=0.9, max_tokens=256)])
    assert reply.texts == [f"fix it|seed=1234|j={j}" for j in range(3)]
    assert reply.errors == ["", "", ""]
    assert (reply.prompt_tokens, reply.completion_tokens) == (10, 9)
    [seen] = fake.seen
    body = seen["body"]
    assert seen["path"] == "/v1/chat/completions"
    assert seen["auth"] == f"Bearer {FAKE_KEY}"
    assert body["model"] == "gpt-test"
    assert body["messages"][-1] == {"role": "user", "content": "fix it"}
    assert (body["n"], body["seed"], body["temperature"], body["top_p"], body["max_tokens"]) == (3, 1234, 0.8, 0.9, 256)
    assert body["top_k"] == 20
    assert teacher.name == "openai:gpt-test"
    assert teacher.usage == dict(requests=1, calls=1, retries=0, prompt_tokens=10, completion_tokens=9,
                                 failed_requests=0)


def test_replies_in_request_order_with_bounded_concurrency(fake, make_teacher):
    fake.delay = 0.05
    teacher = make_teacher(max_concurrency=3)
    prompts = [f"problem {i}" for i in range(18)]
    replies = teacher.answer([req(p, n=2, seed=i) for i, p in enumerate(prompts)])
    assert [r.texts[0].split("|")[0] for r in replies] == prompts
    assert [r.texts[1] for r in replies] == [f"{p}|seed={i}|j=1" for i, p in enumerate(prompts)]
    assert 2 <= fake.max_in_flight <= 3
    assert teacher.usage["requests"] == 18 and teacher.usage["prompt_tokens"] == 180
    assert teacher.answer([]) == []


def test_server_that_ignores_n_gets_topped_up_with_shifted_seeds(fake, make_teacher):
    fake.ignore_n = True
    teacher = make_teacher()
    [reply] = teacher.answer([req("q", n=4, seed=100)])
    assert reply.texts == [f"q|seed={100 + j}|j=0" for j in range(4)]
    assert [s["body"]["n"] for s in fake.seen] == [4, 3, 2, 1]
    assert [s["body"]["seed"] for s in fake.seen] == [100, 101, 102, 103]
    assert (reply.prompt_tokens, reply.completion_tokens) == (40, 12)
    assert teacher.usage["calls"] == 4


def test_missing_usage_counts_zero_and_empty_content_is_an_error_note(fake, make_teacher):
    fake.usage = False
    teacher = make_teacher()
    ok, empty = teacher.answer([req("fine"), req("EMPTY please", n=2)])
    assert (ok.prompt_tokens, ok.completion_tokens) == (0, 0)
    assert ok.errors == [""]
    assert empty.texts == ["", ""]
    assert all("empty answer" in e and "finish_reason=stop" in e for e in empty.errors)


# --- retries ----------------------------------------------------------------------------------

def test_429_without_retry_after_backs_off_then_succeeds(fake, make_teacher):
    fake.script = [(429, {})] * 3
    teacher = make_teacher()
    [reply] = teacher.answer([req("x")])
    assert reply.texts == ["x|seed=7|j=0"]
    assert len(fake.seen) == 4
    assert teacher.usage["retries"] == 3


def test_429_honours_retry_after(fake, make_teacher):
    fake.script = [(429, {"Retry-After": "0.3"})] * 2
    teacher = make_teacher(backoff_max=5.0)
    start = time.monotonic()
    [reply] = teacher.answer([req("x")])
    assert time.monotonic() - start >= 0.55
    assert reply.errors == [""]
    assert teacher.usage["retries"] == 2


def test_retry_after_is_capped_by_backoff_max(fake, make_teacher):
    fake.script = [(429, {"Retry-After": "100"}), (503, {"retry-after-ms": "90000"})]
    teacher = make_teacher(backoff_max=0.05)
    start = time.monotonic()
    [reply] = teacher.answer([req("x")])
    assert time.monotonic() - start < 2.0
    assert reply.errors == [""]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_then_success(fake, make_teacher, status):
    fake.script = [(status, {})] * 2
    teacher = make_teacher()
    [reply] = teacher.answer([req("x", n=2)])
    assert reply.texts == ["x|seed=7|j=0", "x|seed=7|j=1"]
    assert teacher.usage["retries"] == 2


def test_timeout_is_retried(fake, make_teacher):
    fake.hang_first, fake.hang_s = 1, 1.5
    teacher = make_teacher(timeout=0.3)
    [reply] = teacher.answer([req("slow")])
    assert reply.texts == ["slow|seed=7|j=0"]
    assert teacher.usage["retries"] == 1


def test_always_503_raises_teacher_unavailable_quickly(fake, make_teacher):
    fake.always = 503
    teacher = make_teacher(max_retries=3)
    start = time.monotonic()
    with pytest.raises(TeacherUnavailable) as info:
        teacher.answer([req("x")])
    assert time.monotonic() - start < 3.0
    message = str(info.value)
    assert fake.url in message and "503" in message and "rerunning the same command resumes" in message
    assert len(fake.seen) == 4  # 1 try + 3 retries
    assert teacher.usage["retries"] == 3


def test_unavailable_stops_the_rest_of_the_batch(fake, make_teacher):
    fake.always = 503
    teacher = make_teacher(max_concurrency=2, max_retries=2)
    with pytest.raises(TeacherUnavailable):
        teacher.answer([req(f"p{i}") for i in range(40)])
    time.sleep(0.1)
    assert len(fake.seen) < 20  # queued requests were cancelled, not all tried


def test_connection_refused_raises_teacher_unavailable(make_teacher):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    teacher = make_teacher(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2)
    with pytest.raises(TeacherUnavailable, match="connection error"):
        teacher.answer([req("x")])


def test_400_fails_only_that_request(fake, make_teacher):
    fake.refuse = {"TOO LONG": 400}
    teacher = make_teacher()
    a, b, c = teacher.answer([req("a"), req("TOO LONG " * 5, n=3), req("c", n=2)])
    assert a.texts == ["a|seed=7|j=0"] and c.texts == ["c|seed=7|j=0", "c|seed=7|j=1"]
    assert b.texts == ["", "", ""]
    assert all("HTTP 400" in e and fake.url in e for e in b.errors)
    assert teacher.usage["failed_requests"] == 1 and teacher.usage["retries"] == 0
    assert sum("TOO LONG" in s["body"]["messages"][-1]["content"] for s in fake.seen) == 1  # no retry


def test_401_stops_with_a_fix(fake, make_teacher):
    fake.always = 401
    teacher = make_teacher()
    with pytest.raises(TeacherUnavailable, match="401.*check the key"):
        teacher.answer([req("x")])
    assert len(fake.seen) == 1


# --- configuration and the key ----------------------------------------------------------------

def test_missing_key_variable_is_named(monkeypatch, fake):
    monkeypatch.delenv("LEDEX_NO_SUCH_KEY", raising=False)
    with pytest.raises(ValueError, match="LEDEX_NO_SUCH_KEY.*api_key_env=''"):
        OpenAITeacher("m", base_url=fake.url, api_key_env="LEDEX_NO_SUCH_KEY")


def test_local_server_without_key(fake):
    with OpenAITeacher("local", base_url=fake.url, api_key_env="") as teacher:
        [reply] = teacher.answer([req("x")])
    assert reply.errors == [""]
    assert fake.seen[0]["auth"] == "Bearer unused"


@pytest.mark.parametrize("field, value", [("max_concurrency", 0), ("timeout", 0), ("max_retries", -1),
                                          ("backoff_initial", -1.0), ("backoff_max", 0.0001)])
def test_bad_settings_name_the_field(fake, field, value):
    kw = {"base_url": fake.url, "api_key_env": "", "backoff_initial": 0.5, field: value}
    with pytest.raises(ValueError, match=f"`{field}`"):
        OpenAITeacher("m", **kw)


def test_key_never_leaks(fake, make_teacher, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpx2", "httpcore", "ledex_jax"):
        caplog.set_level(logging.DEBUG, logger=name)
    fake.script = [(429, {}), (500, {})]
    fake.refuse = {"TOO LONG": 400}
    teacher = make_teacher(max_retries=2)
    replies = teacher.answer([req("ok"), req("TOO LONG")])
    fake.always = 503
    with pytest.raises(TeacherUnavailable) as info:
        teacher.answer([req("ok again")])
    fake.always = 401
    with pytest.raises(TeacherUnavailable) as info401:
        teacher.answer([req("bad key")])
    out, err = capsys.readouterr()
    seen = [
        repr(teacher), str(teacher), repr(replies), str(teacher.usage), out, err, caplog.text,
        *(r.getMessage() for r in caplog.records),
        *("".join(traceback.format_exception(e.value)) for e in (info, info401)),
        repr(info.value), repr(info401.value),
    ]
    assert any("scripted failure 400" in s for s in seen)  # the server did echo the header...
    assert any("<redacted>" in s for s in seen)
    for text in seen:
        assert FAKE_KEY not in text  # ...and the teacher scrubbed it everywhere
    assert info.value.__cause__ is None
    assert fake.seen[0]["auth"] == f"Bearer {FAKE_KEY}"  # the key did go where it belongs
