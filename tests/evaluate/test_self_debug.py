"""The self-debug loop, driven by a scripted model through the real sandboxed pool.

self_debug_fakes.py sets the scene: a toy benchmark with base and plus suites (2 problems) and
three HumanEval tasks, 3 samples each, two rounds of Refine and of Explain+Refine. The numbers
below are worked out by hand from its script.
"""
import json
import os
import subprocess
import sys
from fractions import Fraction as F
from pathlib import Path

import pytest

from ledex_jax.collect import store
from ledex_jax.data.prompts import EXPLAIN_REFINE_INSTRUCTION, REFINE_INSTRUCTION
from ledex_jax.evaluate.eval_model import EvalModelError, ModelOptions, load_eval_model
from ledex_jax.evaluate.self_debug import (PASSES_BASE_FEEDBACK, SelfDebugError, SelfDebugEval, Settings,
                                           answer_key, default_workdir, summary_text)
from process_helpers import kill_when
from self_debug_fakes import PLUS_MARK, scenario

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# (pass@1, pass@2, passed, wrong[, refined, fixed, success_rate]) per round
EXPECTED = {
    "toy": {
        "init": [(F(1, 3), F(2, 3), 2, 4)],
        "refine": [(F(1, 3), F(2, 3), 2, 4), (F(5, 6), 1, 5, 1, 4, 3, F(3, 4)), (F(5, 6), 1, 5, 1, 1, 0, 0)],
        "explain_refine": [(F(1, 3), F(2, 3), 2, 4), (F(1, 2), F(5, 6), 3, 3, 4, 1, F(1, 4)),
                           (F(5, 6), 1, 5, 1, 3, 2, F(2, 3))]},
    "humaneval": {
        "init": [(F(5, 9), F(2, 3), 5, 4)],
        "refine": [(F(5, 9), F(2, 3), 5, 4), (F(7, 9), F(8, 9), 7, 2, 4, 2, F(1, 2)), (F(8, 9), 1, 8, 1, 2, 1, F(1, 2))],
        "explain_refine": [(F(5, 9), F(2, 3), 5, 4), (F(5, 9), F(2, 3), 5, 4, 4, 0, 0), (F(5, 9), F(2, 3), 5, 4, 4, 0, 0)]},
    # toy weighs 2 problems, humaneval 3; counts add up
    "overall": {
        "init": [(F(7, 15), F(2, 3), 7, 8)],
        "refine": [(F(7, 15), F(2, 3), 7, 8), (F(4, 5), F(14, 15), 12, 3, 8, 5, F(3, 5)),
                   (F(13, 15), 1, 13, 2, 3, 1, F(3, 10))],
        "explain_refine": [(F(7, 15), F(2, 3), 7, 8), (F(8, 15), F(11, 15), 8, 7, 8, 1, F(1, 10)),
                           (F(2, 3), F(4, 5), 10, 5, 7, 2, F(4, 15))]},
}


def as_record(r, row):
    keys = ("pass@1", "pass@2", "passed", "wrong", "refined", "fixed", "success_rate")
    return {"round": r, **{k: float(v) if isinstance(v, F) else v for k, v in zip(keys, row)}}


def refinement_keys(method, r, samples):
    return {answer_key(task, j, method, r) for task, js in samples.items() for j in js}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, pool):
    """The scenario run to the end once: (workdir, results, the model that answered)."""
    workdir = tmp_path_factory.mktemp("self_debug") / "run"
    benchmarks, model, settings = scenario()
    results = SelfDebugEval(benchmarks, settings, workdir, model_spec="scripted").run(model, pool, progress=False)
    return workdir, results, model


def test_pass_at_k_counts_and_success_rate_per_round_equal_hand_computation(finished):
    _, results, _ = finished
    for name in ("toy", "humaneval"):
        bench = results["benchmarks"][name]
        assert bench["problems"] == {"toy": 2, "humaneval": 3}[name] and bench["samples"] == 3 * bench["problems"]
        for method, rows in EXPECTED[name].items():
            assert bench["rounds"][method] == [pytest.approx(as_record(r, row)) for r, row in enumerate(rows)], \
                (name, method)
    assert set(results["benchmarks"]["toy"]["rounds"]) == {"init", "refine", "explain_refine"}


def test_overall_is_the_problem_weighted_average(finished):
    _, results, _ = finished
    assert results["overall"]["problems"] == 5
    for method, rows in EXPECTED["overall"].items():
        assert results["overall"]["rounds"][method] == [pytest.approx(as_record(r, row)) for r, row in enumerate(rows)]


def test_results_json_has_the_documented_layout(finished):
    workdir, results, _ = finished
    assert json.loads((workdir / "results.json").read_text()) == results
    assert set(results) == {"version", "model", "label", "settings", "benchmarks", "overall", "throughput"}
    assert results["settings"] == {"n": 3, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 512, "ks": [1, 2],
                                   "rounds": 2, "methods": ["refine", "explain_refine"], "few_shot": 0,
                                   "refine_temperature": 0.8, "limit": None, "style": "chat_template"}
    t = results["throughput"]
    assert t["answers"] == 15 + 8 + 3 + 8 + 7  # initial samples + every refinement asked for
    assert t["samples_per_s"] > 0 and t["generated_tokens_per_s"] > 0
    assert set(t["stage_seconds"]) == {"generate", "execute"}
    text = summary_text(results)
    assert "toy (2 problems, 6 samples)" in text and "success 3/4 (75.00%)" in text and "throughput:" in text


def test_passing_samples_are_never_refined_and_fixed_ones_stop(finished):
    _, _, model = finished
    asked = [r.key for r in model.requests]
    assert len(asked) == len(set(asked)), "some item was asked twice"
    initial = {"toy/add", "toy/double", "HumanEval/0", "HumanEval/2", "HumanEval/4"}
    assert {k for k in asked if "/s0" not in k} == initial
    both_r1 = {"toy/add": [1, 2], "toy/double": [0, 2], "HumanEval/0": [1], "HumanEval/2": [0, 1, 2]}
    expected = (refinement_keys("refine", 1, both_r1) | refinement_keys("explain_refine", 1, both_r1)
                | refinement_keys("refine", 2, {"toy/add": [2], "HumanEval/2": [1, 2]})
                | refinement_keys("explain_refine", 2, {"toy/add": [1], "toy/double": [0, 2], "HumanEval/0": [1],
                                                        "HumanEval/2": [0, 1, 2]}))
    assert set(asked) - initial == expected


def test_prompts_show_the_latest_code_and_base_feedback_only(finished):
    _, _, model = finished
    prompts = {r.key: r.messages for r in model.requests}
    assert not any(PLUS_MARK in m["content"] for msgs in prompts.values() for m in msgs)
    failing_base = prompts[answer_key("toy/add", 1, "explain_refine", 1)]
    assert [m["role"] for m in failing_base] == ["user", "assistant", "user"]
    assert "return a - b" in failing_base[1]["content"]
    assert "assert add(1, 2) == 3" in failing_base[2]["content"] and "-1" in failing_base[2]["content"]
    assert failing_base[2]["content"].endswith(EXPLAIN_REFINE_INSTRUCTION)
    passing_base = prompts[answer_key("toy/add", 2, "refine", 1)][2]["content"]
    assert passing_base == f"{PASSES_BASE_FEEDBACK}\n\n{REFINE_INSTRUCTION}"
    # round 2 shows round 1's code (a * b) and its feedback, not the initial sample's
    second = prompts[answer_key("toy/add", 2, "refine", 2)]
    assert "return a * b" in second[1]["content"] and "# Actual output: 2" in second[2]["content"]
    # an answer without code leaves the sample as it was for the next round
    kept = prompts[answer_key("toy/double", 0, "explain_refine", 2)]
    assert "return x + 2" in kept[1]["content"]


def test_sample_files_are_evalplus_format_and_rescore_to_the_same_passes(finished, tmp_path):
    workdir, results, _ = finished
    folder = workdir / "samples" / "humaneval"
    assert sorted(p.name for p in folder.iterdir()) == [
        "explain_refine_round1.jsonl", "explain_refine_round2.jsonl", "refine_round1.jsonl", "refine_round2.jsonl",
        "round0.jsonl"]
    rows = [json.loads(line) for line in (folder / "refine_round1.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["completion_id"]) for r in rows] == [
        (t, j) for t in ("HumanEval/0", "HumanEval/2", "HumanEval/4") for j in range(3)]
    assert all(set(r) == {"task_id", "completion_id", "solution"} for r in rows)
    copy = tmp_path / "refine_round1.jsonl"
    copy.write_bytes((folder / "refine_round1.jsonl").read_bytes())
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--workers=2", "--benchmark=humaneval",
                           f"--samples={copy}", "--k=1", "--allow_unsandboxed"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rescored = [json.loads(line) for line in copy.with_name("refine_round1_results.jsonl").read_text().splitlines()]
    refine_1 = results["benchmarks"]["humaneval"]["rounds"]["refine"][1]
    assert sum(r["passed"] for r in rescored) == refine_1["passed"] == 7
    per_sample = [json.loads(line) for line in (workdir / "per_sample.jsonl").read_text().splitlines()]
    assert len(per_sample) == 15 + 8 + 3 + 8 + 7  # every initial sample and every refinement asked for
    row = next(r for r in per_sample if (r["task_id"], r["completion_id"], r["method"], r["round"])
               == ("toy/add", 2, "init", 0))
    assert row["suites"] == {"base": True, "plus": False} and row["passed"] is False


def test_a_finished_run_asks_nothing_again(finished, pool):
    workdir, results, _ = finished
    benchmarks, model, settings = scenario()
    again = SelfDebugEval(benchmarks, settings, workdir, model_spec="scripted").run(model, pool, progress=False)
    assert model.requests == []
    assert {k: v for k, v in again.items() if k != "throughput"} == {
        k: v for k, v in results.items() if k != "throughput"}


def test_other_settings_or_a_foreign_folder_are_refused(finished, tmp_path):
    workdir, _, _ = finished
    benchmarks, _, settings = scenario(temperature=0.5)
    with pytest.raises(SelfDebugError, match=r"temperature: 0\.8 -> 0\.5.*new --workdir"):
        SelfDebugEval(benchmarks, settings, workdir, model_spec="scripted")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.json").write_text("precious")
    with pytest.raises(SelfDebugError, match="not an evaluation"):
        SelfDebugEval(benchmarks, settings, mine, model_spec="scripted")
    assert (mine / "results.json").read_text() == "precious" and len(list(mine.iterdir())) == 1


def test_n_below_k_is_refused():
    with pytest.raises(SelfDebugError, match="pass@10 needs at least 10 samples per task, but n=4"):
        Settings(n=4, ks=(1, 10))


def test_few_shot_prompts_and_greedy_refinement(pool, tmp_path):
    benchmarks, model, settings = scenario(rounds=1, methods=("refine",), few_shot=1, refine_temperature=0)
    results = SelfDebugEval(benchmarks[:1], settings, tmp_path / "run", model_spec="scripted").run(
        model, pool, progress=False)
    first, refinement = model.requests[0], model.requests[-1]
    assert (first.n, first.temperature) == (3, 0.8) and (refinement.n, refinement.temperature) == (1, 0)
    assert [m["role"] for m in first.messages] == ["user", "assistant", "user"]  # one codegen example
    assert "sum_of_squares" in first.messages[0]["content"] and "sum_of_squares" in refinement.messages[0]["content"]
    assert len(refinement.messages) == 2 * 4 - 1  # one complete refine example, then the sample's own turns
    assert results["settings"]["refine_temperature"] == 0 and results["settings"]["few_shot"] == 1
    assert list(results["benchmarks"]) == ["toy"] and list(results["benchmarks"]["toy"]["rounds"]) == ["init", "refine"]


def test_resume_after_sigkill_gives_the_uninterrupted_results(finished, tmp_path):
    """A run killed midway (answers saved without their verdicts, a round half done), then the same
    command again: no saved answer is asked for again, and every output matches."""
    reference, results, _ = finished
    workdir, runner = tmp_path / "run", [sys.executable, str(HERE / "self_debug_run.py")]
    verdicts = workdir / "records" / "toy" / "verdicts" / "part-00000.jsonl"
    proc = subprocess.Popen(runner + [str(workdir), str(tmp_path / "first.log")], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SELF_DEBUG_DELAY": "0.25"})
    # kill once round 1 has saved some verdicts (toy's 6 initial ones come first)
    kill_when(proc, lambda: verdicts.exists() and verdicts.read_bytes().count(b"\n") > 6, 120)
    assert not (workdir / "results.json").exists()
    saved = store.read_stage(workdir / "records" / "toy", "answers")
    saved.update(store.read_stage(workdir / "records" / "humaneval", "answers"))

    done = subprocess.run(runner + [str(workdir), str(tmp_path / "second.log")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for line in (tmp_path / "second.log").read_text().splitlines():
        request = json.loads(line)
        covers = ([answer_key(request["key"], j) for j in range(request["n"])]
                  if "/s0" not in request["key"] else [request["key"]])
        assert not all(k in saved for k in covers), f"{request['key']} was answered before the kill"
    after = json.loads((workdir / "results.json").read_text())
    assert {k: v for k, v in after.items() if k != "throughput"} == {
        k: v for k, v in results.items() if k != "throughput"}
    for path in sorted(reference.glob("samples/*/*.jsonl")) + [reference / "per_sample.jsonl"]:
        if not path.name.endswith("_results.jsonl"):
            assert (workdir / path.relative_to(reference)).read_bytes() == path.read_bytes(), path


@pytest.mark.parametrize("args,message", [
    (["--model=embedded:smollm2", "--benchmark=humaneval", "--n=4", "--k=1,10"], "pass@10 needs at least 10"),
    (["--model=embedded:smollm2", "--samples=s.jsonl", "--benchmark=humaneval"], "not both"),
    (["--model=embedded:smollm2", "--benchmark=humaneval,mbpp", "--data_path=mbpp.jsonl"], "name=path"),
    (["--model=embedded:smollm2", "--benchmark=humaneval", "--few_shot=1000"], "use at most"),
    (["--model=embedded:smollm2", "--benchmark=humaneval", "--judge=gpt-4o"], "use openai:MODEL"),
    (["--model=embedded:smollm2", "--benchmark=humaneval", "--judge=openai:gpt-4o", "--refine=refine"],
     "grades Explain+Refine"),
])
def test_cli_usage_errors_come_before_loading_a_model(args, message, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), f"--workdir={tmp_path / 'w'}", *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "w").exists()


def test_model_specs(monkeypatch):
    monkeypatch.delenv("LEDEX_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(EvalModelError, match="names no model"):
        load_eval_model("openai:")
    with pytest.raises(EvalModelError, match="LEDEX_TEST_NO_SUCH_KEY"):
        load_eval_model("openai:gpt-4o", ModelOptions(api_key_env="LEDEX_TEST_NO_SUCH_KEY"))
    served = load_eval_model("openai:smollm2", ModelOptions(base_url="http://127.0.0.1:9/v1", api_key_env=""))
    assert served.name == "openai:smollm2" and served.endpoint == "http://127.0.0.1:9/v1"
    served.close()
    assert default_workdir("runs/sft-7b", ["mbpp", "mbppplus"], Settings(n=4, ks=(1,))) == Path(
        "runs/eval/runs_sft-7b/mbpp+mbppplus-n4-t0.8")


def test_round_one_explanations_go_to_the_judge(finished, pool):
    from ledex_jax.collect.teacher_api import TeacherReply
    from ledex_jax.evaluate.judge import judge_explanations

    workdir, _, _ = finished
    benchmarks, model, settings = scenario()
    evaluation = SelfDebugEval(benchmarks, settings, workdir, model_spec="scripted")
    evaluation.run(model, pool, progress=False)  # all saved: rebuilds the chains, asks nothing
    items = {it.key: it for it in evaluation.explanation_items() if it.key.startswith("toy/")}
    key = lambda task, j: "toy/" + answer_key(task, j, "explain_refine", 1)
    # every wrong sample's round-1 answer with an explanation, none of the samples that passed
    assert set(items) == {key("toy/add", 1), key("toy/add", 2), key("toy/double", 0), key("toy/double", 2)}
    first = items[key("toy/add", 1)]
    assert first.explanation == "The operator looks right." and first.wrong_code.endswith("return a - b")
    assert first.refinement_passed is False and PLUS_MARK not in first.feedback
    assert items[key("toy/add", 2)].refinement_passed is True
    assert items[key("toy/double", 0)].refined_code is None  # explained, but wrote no code

    class Grader:  # 5 for the one right explanation, 2 for the rest: each score must land on its key
        def answer(self, requests):
            return [TeacherReply([f"Score: {5 if 'abs() drops the sign' in r.messages[-1]['content'] else 2}"], [""])
                    for r in requests]

    report = judge_explanations(list(items.values()), "openai:judge", teacher=Grader())
    assert report.scores == {k: 5 if k == key("toy/add", 2) else 2 for k in items}
    assert report.to_json()["mean"] == pytest.approx((5 + 2 * 3) / 4)
