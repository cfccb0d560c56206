"""Explanation quality: an LLM judge scores explanations of wrong code from 1 to 5 (LeDex §4).

The paper has GPT-4 grade the explanations a model writes for its own wrong solutions, on 50
problems, by correctness and helpfulness (its Table 15); the rubric below is our wording of that
scale. The judge is any OpenAI-compatible chat endpoint (``openai:MODEL``), reached through the
same client and retry policy as the data-collection teacher, at temperature 0 with one answer
per item. It ends its reply with ``Score: N``; a reply without a usable final score, and an item
whose request failed, are counted as unparsed, never guessed.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Sequence

from ledex_jax.collect.teacher_api import TeacherReply, TeacherRequest, TeacherUnavailable, key_seed

SCORES = (1, 2, 3, 4, 5)
MAX_TOKENS = 1024  # room for a short justification before the score line
log = logging.getLogger(__name__)

RUBRIC = """\
You are reviewing an explanation of why a program is wrong. A programmer wrote the code below \
for the problem, it failed the tests as the execution feedback shows, and then someone explained \
what is wrong with it. Grade that explanation only: how correct it is about the actual bug, and \
how much it would help the programmer fix the code.

Scale:
5 - Correct and complete: it identifies the real cause of the failure, where it is in the code, \
and how to fix it; the programmer could repair the code from it alone.
4 - Correct about the real bug and useful, but vague or incomplete about where it is or how to \
fix it.
3 - Partly correct: it points in the right direction or finds a genuine but secondary problem, \
while missing or blurring the main bug.
2 - Mostly unhelpful: generic advice, or a restatement of the problem or of the test failure, \
without a correct reason why the code fails.
1 - Wrong or misleading: it blames code that is fine, invents problems, contradicts the \
feedback, would lead the programmer away from the fix, or is missing.
"""

INSTRUCTION = ("Judge the explanation, not the code and not any fix. Give a brief reason, then "
               "end with a final line of the form `Score: N`, where N is 1, 2, 3, 4 or 5.")

# "Score: 4", "**Score:** 4", "Final score = [4]/5", ...: the number after the last "score".
_SCORE = re.compile(r"\bscore\b[\s*_`]*[:=][\s*_`\[(]*([+-]?\d+(?:\.\d+)?)", re.IGNORECASE)


class JudgeError(ValueError):
    """The judge was asked for with a spec or items it cannot use."""


@dataclasses.dataclass(frozen=True)
class JudgeItem:
    """One explanation to grade, of one wrong solution; ``key`` is a stable id (unique per
    run), e.g. ``humaneval/HumanEval/3/s002/r1``. The refinement written with the explanation,
    when given, is shown to the judge as context."""

    key: str
    problem: str
    wrong_code: str
    feedback: str
    explanation: str
    refined_code: str | None = None
    refinement_passed: bool | None = None


@dataclasses.dataclass(frozen=True)
class JudgeReport:
    """Scores by key: 1..5, or None where the judge's reply had no usable score or the
    request failed."""

    judge: str
    scores: dict[str, int | None]

    def __post_init__(self):
        bad = {k: v for k, v in self.scores.items() if v is not None and v not in SCORES}
        if bad:
            raise JudgeError(f"JudgeReport: scores must be 1..5 or None; got {bad}")

    def to_json(self) -> dict:
        """Count, how many got a score, how many did not, their mean (None when none did) and
        how many got each score."""
        scored = [s for s in self.scores.values() if s is not None]
        return {"judge": self.judge,
                "count": len(self.scores),
                "scored": len(scored),
                "unparsed": len(self.scores) - len(scored),
                "mean": sum(scored) / len(scored) if scored else None,
                "distribution": {str(s): scored.count(s) for s in SCORES}}


def parse_score(text: str) -> int | None:
    """The score the judge's reply ends on: the number after its last ``Score:``, if that is a
    whole number from 1 to 5; otherwise None (an earlier score is not taken instead: the judge
    may have revised it)."""
    matches = _SCORE.findall(text or "")
    if not matches:
        return None
    value = float(matches[-1])
    return int(value) if value.is_integer() and int(value) in SCORES else None


def judge_prompt(item: JudgeItem) -> str:
    """The user turn asking the judge to grade ``item``: the rubric, the problem, the wrong code,
    its execution feedback, the explanation and (if any) the fix written with it."""
    parts = [RUBRIC,
             "## Problem\n" + item.problem.strip(),
             "## Wrong code\n```python\n" + item.wrong_code.strip("\n") + "\n```",
             "## Execution feedback\n" + (item.feedback.strip() or "(none)"),
             "## Explanation to grade\n" + (item.explanation.strip() or "(empty)")]
    if item.refined_code is not None:
        verdict = {True: "it passed the tests", False: "it failed the tests",
                   None: "not tested"}[item.refinement_passed]
        parts.append(f"## Fix written with the explanation ({verdict}; context only)\n"
                     "```python\n" + item.refined_code.strip("\n") + "\n```")
    parts.append(INSTRUCTION)
    return "\n\n".join(parts) + "\n"


def select_items(items: Iterable[JudgeItem], limit: int = 50, seed: int = 0) -> list[JudgeItem]:
    """At most one item per problem (the same problem text), from at most ``limit`` problems:
    the paper judges 50 problems with wrong solutions. The choice depends only on the items'
    keys, problems and ``seed``, not on their order; the result is sorted by key."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise JudgeError(f"select_items: limit={limit!r}; use a whole number of problems >= 0")
    best: dict[str, tuple[tuple[int, str], JudgeItem]] = {}
    for item in _unique(items, "select_items"):
        rank = (key_seed(seed, "item", item.key), item.key)
        if item.problem not in best or rank < best[item.problem][0]:
            best[item.problem] = (rank, item)
    problems = sorted(best, key=lambda text: (key_seed(seed, "problem", text), text))[:limit]
    return sorted((best[text][1] for text in problems), key=lambda item: item.key)


def judge_explanations(items: Iterable[JudgeItem], judge: str, *, base_url: str | None = None,
                       api_key_env: str = "OPENAI_API_KEY", max_concurrency: int = 8,
                       timeout: float = 120.0, max_retries: int = 6, teacher=None) -> JudgeReport:
    """Score every item with the judge ``openai:MODEL`` (at ``base_url``, its key in the
    environment variable ``api_key_env``; '' for a local server without one). ``teacher``
    replaces the client: any object with ``answer(requests)``. Failed requests and replies
    without a score become None, with a warning that says how many and why."""
    model = judge_model(judge)
    items = _unique(items, "judge_explanations")
    if not items:
        return JudgeReport(judge, {})
    requests = [TeacherRequest(key=item.key,
                               messages=[{"role": "user", "content": judge_prompt(item)}],
                               n=1, temperature=0.0, top_p=1.0, max_tokens=MAX_TOKENS,
                               seed=key_seed("judge", item.key))
                for item in items]
    own = teacher is None
    if own:
        from ledex_jax.collect.openai_teacher import OpenAITeacher
        teacher = OpenAITeacher(model, base_url=base_url, api_key_env=api_key_env,
                                max_concurrency=max_concurrency, timeout=timeout,
                                max_retries=max_retries)
    try:
        replies: Sequence[TeacherReply | None] = teacher.answer(requests)
    except TeacherUnavailable as err:
        log.warning("judge %s failed; no explanation is scored: %s", judge, err)
        replies = [None] * len(requests)
    finally:
        if own:
            teacher.close()
    if len(replies) != len(requests):
        raise JudgeError(f"judge {judge}: {len(replies)} replies to {len(requests)} requests; a "
                         "teacher must answer every request, in order")
    scores, failures = {}, []
    for item, reply in zip(items, replies):
        scores[item.key] = score = _score(reply)
        if score is None:
            failures.append(f"{item.key}: {_why_unscored(reply)}")
    if failures:
        log.warning("judge %s: %d of %d explanations got no score (first: %s)", judge,
                    len(failures), len(items), failures[0])
    return JudgeReport(judge, scores)


def judge_model(judge: str) -> str:
    """MODEL of a judge spec ``openai:MODEL``."""
    kind, _, model = str(judge).partition(":")
    if kind != "openai" or not model.strip():
        raise JudgeError(f"judge {judge!r}: use openai:MODEL, e.g. openai:gpt-4o (any "
                         "OpenAI-compatible endpoint; set base_url for another server)")
    return model.strip()


def _unique(items: Iterable[JudgeItem], where: str) -> list[JudgeItem]:
    items = list(items)
    seen = set()
    for item in items:
        if not isinstance(item, JudgeItem):
            raise JudgeError(f"{where}: expected JudgeItems, got a {type(item).__name__}")
        if item.key in seen:
            raise JudgeError(f"{where}: key {item.key!r} appears twice; every item needs its own "
                             "key (scores are reported by key)")
        seen.add(item.key)
    return items


def _score(reply: TeacherReply | None) -> int | None:
    if reply is None or not reply.texts or (reply.errors and reply.errors[0]):
        return None
    return parse_score(reply.texts[0])


def _why_unscored(reply: TeacherReply | None) -> str:
    if reply is None:
        return "the judge was unavailable"
    if not reply.texts:
        return "no answer"
    if reply.errors and reply.errors[0]:
        return reply.errors[0]
    tail = reply.texts[0].strip()[-120:]
    return f"no final 'Score: N' with N in 1..5 in the reply (it ends: {tail!r})"
