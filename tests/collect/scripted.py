"""A scripted stand-in for the model and teacher in fast collection tests: it answers the bundled
demo problems from their SFT records (a right solution, the known wrong one, or prose without
code), chosen by each answer's random stream, so runs are deterministic and every path of the
pipeline (correct, wrong, fixed, unparsable) is taken in seconds. The real-model runs are the
slow tests."""
import json
import os
import time
from pathlib import Path

from ledex_jax.collect.teacher_api import TeacherReply, key_seed

DEMO = Path(__file__).resolve().parents[2] / "ledex_jax" / "data" / "demo" / "sft_demo.jsonl"


class ScriptedModel:
    name = "scripted"

    def __init__(self):
        self.right, self.wrong = {}, {}
        for line in DEMO.read_text().splitlines():
            rec = json.loads(line)
            if rec["format"] == "codegen":
                self.right[rec["problem"]] = rec["refined_code"]
            elif rec["format"] == "refine":
                self.wrong[rec["problem"]] = rec["wrong_code"]
        self.delay = float(os.environ.get("SCRIPTED_DELAY", "0"))
        self.calls = 0

    def _one(self, messages, seed, j):
        pick = key_seed(seed, j) % 3
        teach = len(messages) >= 3 and messages[-2]["role"] == "assistant"
        problem = messages[-3]["content"] if teach else messages[-1]["content"]
        right, wrong = self.right[problem], self.wrong[problem]
        if pick == 2:
            return "I am not sure how to do this." if not teach else "The loop is wrong; it should stop earlier."
        code = right if pick == 0 else wrong
        text = f"```python\n{code}\n```"
        return f"The code misses a case; here is a fix.\n\n{text}" if teach else text

    def answer(self, requests, progress=False):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return [TeacherReply([self._one(r.messages, r.seed, j) for j in range(r.n)], [""] * r.n,
                             prompt_tokens=len(r.messages), completion_tokens=r.n) for r in requests]

    def close(self):
        pass


def install():
    """Makes every Collection use the scripted model as its policy (and so as its self-teacher)."""
    from ledex_jax.collect import pipeline

    model = ScriptedModel()

    def policy(self):
        return model

    pipeline.Collection.policy = policy
    return model
