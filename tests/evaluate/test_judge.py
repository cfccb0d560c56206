"""The explanation judge: its prompt, score parsing, the report's numbers, the 50-problem choice,
and a run over real HTTP against a stub OpenAI server on loopback that grades by what each
explanation says (so the test sees that each score lands on its own key)."""
from __future__ import annotations

import logging

import pytest

from ledex_jax.collect.teacher_api import TeacherReply, key_seed
from ledex_jax.evaluate.judge import (MAX_TOKENS, JudgeError, JudgeItem, JudgeReport,
                                      judge_explanations, judge_prompt, parse_score, select_items)
from tests.collect.test_openai_teacher import FakeOpenAI


def item(key, explanation="The loop stops one element early.", problem="Sum a list.", **kw):
    return JudgeItem(key=key, problem=problem, wrong_code="def f(xs):\n    return sum(xs[:-1])\n",
                     feedback="assert f([1, 2]) == 3\n# Actual output: 1", explanation=explanation,
                     **kw)


class GradingServer(FakeOpenAI):
    """The collection tests' fake endpoint, answering as a judge: the reply is chosen by which
    of ``grades``' phrases the graded explanation contains."""

    def __init__(self, grades: dict[str, str]):
        super().__init__()
        self.grades = grades

    def respond(self, body, scripted, auth):
        status, headers, payload = super().respond(body, scripted, auth)
        if status == 200:
            prompt = body["messages"][-1]["content"]
            explanation = prompt.split("## Explanation to grade\n", 1)[1]
            reply = next((r for phrase, r in self.grades.items() if phrase in explanation),
                         "I cannot tell.")
            for choice in payload["choices"]:
                choice["message"]["content"] = reply
        return status, headers, payload


@pytest.fixture
def server():
    s = GradingServer({
        "slice drops the last element": "It names the bug and the fix.\nScore: 5",
        "something about indexing": "Right area, no detail.\n**Score:** 3/5",
        "the function name is wrong": "Blames correct code.\nScore: 1",
        "no idea": "Hard to say; between 2 and 3.",  # no score line
        "REFUSED": "Score: 4",
    })
    s.refuse = {"REFUSED": 400}
    yield s
    s.close()


def test_the_prompt_holds_what_the_judge_grades():
    it = item("k", problem="Return the sum of a list.", explanation="The slice drops the last one.",
              refined_code="def f(xs):\n    return sum(xs)\n", refinement_passed=True)
    text = judge_prompt(it)
    for part in (it.problem, it.wrong_code.strip(), it.feedback, it.explanation, "Score: N",
                 "def f(xs):\n    return sum(xs)", "it passed the tests"):
        assert part in text, part
    assert text.index("## Wrong code") < text.index("## Execution feedback") < \
        text.index("## Explanation to grade") < text.index("## Fix written")
    assert "## Fix written" not in judge_prompt(item("k"))


@pytest.mark.parametrize("reply,score", [
    ("Score: 4", 4),
    ("The explanation is right.\n\nScore: 5\n", 5),
    ("**Score:** 2", 2),
    ("Score: **3**", 3),
    ("Final score = [4]/5.", 4),
    ("score:1", 1),
    ("Score:\n5", 5),
    ("Score: 4 out of 5", 4),
    ("Score: 4.0", 4),
    ("Score: 2. On reflection it misses the fix.\nScore: 3", 3),  # the last one counts
    ("Score: 5\nScore: 9", None),  # the final score is out of range: not replaced by the 5
    ("Score: 6", None),
    ("Score: 0", None),
    ("Score: -3", None),
    ("Score: 10", None),
    ("Score: 4.5", None),
    ("Score: N", None),
    ("I would give it a 4.", None),
    ("Scores: 4", None),
    ("underscore: 4", None),
    ("", None),
    (None, None),
])
def test_score_parsing(reply, score):
    assert parse_score(reply) == score


def test_mean_and_distribution():
    report = JudgeReport("openai:m", {"a": 5, "b": 3, "c": None, "d": 3, "e": 1, "f": None})
    assert report.to_json() == {"judge": "openai:m", "count": 6, "scored": 4, "unparsed": 2,
                                "mean": 3.0, "distribution": {"1": 1, "2": 0, "3": 2, "4": 0, "5": 1}}
    empty = JudgeReport("openai:m", {"a": None}).to_json()
    assert empty["mean"] is None and empty["unparsed"] == 1 and sum(empty["distribution"].values()) == 0
    with pytest.raises(JudgeError, match=r"1..5 or None; got \{'a': 6\}"):
        JudgeReport("openai:m", {"a": 6})


def test_select_items_takes_one_item_from_each_of_at_most_limit_problems():
    items = [item(f"p{p}/s{s}", problem=f"problem {p}") for p in range(80) for s in range(3)]
    chosen = select_items(items, limit=50, seed=0)
    assert len(chosen) == 50 and len({i.problem for i in chosen}) == 50
    assert [i.key for i in chosen] == sorted(i.key for i in chosen)
    assert select_items(list(reversed(items)), limit=50, seed=0) == chosen  # order-independent
    assert select_items(items, limit=50, seed=1) != chosen
    few = select_items(items[:6], limit=50)
    assert sorted(i.problem for i in few) == ["problem 0", "problem 1"]
    assert select_items(items, limit=0) == []


def test_select_items_errors():
    with pytest.raises(JudgeError, match="limit=-1"):
        select_items([item("a")], limit=-1)
    with pytest.raises(JudgeError, match="key 'a' appears twice"):
        select_items([item("a"), item("a", problem="other")])


def test_end_to_end_through_a_stub_server_on_loopback(server, caplog):
    items = [item("humaneval/HumanEval/3/s000/r1", "The slice drops the last element; use xs."),
             item("humaneval/HumanEval/3/s001/r1", "It is something about indexing."),
             item("mbpp/Mbpp/2/s004/r1", "I think the function name is wrong.", problem="P2"),
             item("mbpp/Mbpp/7/s000/r1", "no idea", problem="P7"),
             item("mbpp/Mbpp/9/s000/r1", "REFUSED by the server", problem="P9")]
    with caplog.at_level(logging.WARNING):
        report = judge_explanations(items, "openai:judge-model", base_url=server.url,
                                    api_key_env="", max_retries=0)
    assert report.judge == "openai:judge-model"
    assert report.scores == {"humaneval/HumanEval/3/s000/r1": 5, "humaneval/HumanEval/3/s001/r1": 3,
                             "mbpp/Mbpp/2/s004/r1": 1, "mbpp/Mbpp/7/s000/r1": None,
                             "mbpp/Mbpp/9/s000/r1": None}
    assert report.to_json()["mean"] == 3.0 and report.to_json()["unparsed"] == 2
    assert "2 of 5 explanations got no score" in caplog.text
    assert len(server.seen) == len(items)
    for seen in server.seen:
        body = seen["body"]
        assert body["model"] == "judge-model" and body["temperature"] == 0.0
        assert body["n"] == 1 and body["max_tokens"] == MAX_TOKENS
        [message] = body["messages"]
        key = next(i.key for i in items if i.explanation in message["content"])
        assert body["seed"] == key_seed("judge", key)


def test_an_unreachable_judge_leaves_every_item_unscored(server, caplog):
    server.always = 503
    with caplog.at_level(logging.WARNING):
        report = judge_explanations([item("a"), item("b")], "openai:m", base_url=server.url,
                                    api_key_env="", max_retries=0)
    assert report.scores == {"a": None, "b": None}
    assert "judge openai:m failed" in caplog.text and "HTTP 503" in caplog.text


class ScriptedTeacher:
    name = "scripted"

    def __init__(self, replies):
        self.replies, self.requests = replies, []

    def answer(self, requests):
        self.requests += requests
        return [self.replies[r.key] for r in requests]


def test_any_teacher_can_judge_and_reply_errors_are_unparsed():
    teacher = ScriptedTeacher({"a": TeacherReply(["Score: 4"], [""]),
                               "b": TeacherReply([""], ["HTTP 400: too long"]),
                               "c": TeacherReply(["Score: 2"], [""])})
    report = judge_explanations([item("a"), item("b"), item("c")], "openai:m", teacher=teacher)
    assert report.scores == {"a": 4, "b": None, "c": 2}
    assert [r.key for r in teacher.requests] == ["a", "b", "c"]


def test_bad_judge_specs_and_items():
    for spec in ("gpt-4o", "hf:some/model", "openai:", "openai: "):
        with pytest.raises(JudgeError, match="use openai:MODEL"):
            judge_explanations([item("a")], spec, teacher=ScriptedTeacher({}))
    with pytest.raises(JudgeError, match="key 'a' appears twice"):
        judge_explanations([item("a"), item("a")], "openai:m", teacher=ScriptedTeacher({}))
    assert judge_explanations([], "openai:m").to_json()["count"] == 0  # no client needed


def test_a_missing_api_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("LEDEX_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(ValueError, match="LEDEX_TEST_JUDGE_KEY .* is not set"):
        judge_explanations([item("a")], "openai:m", api_key_env="LEDEX_TEST_JUDGE_KEY")
