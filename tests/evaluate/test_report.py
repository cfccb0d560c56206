"""The evaluation's outputs: results.json checks, Table 2 in Markdown, plots, and comparing runs."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ledex_jax.evaluate import compare, plots, report
from ledex_jax.evaluate.report import ResultsError

REPO = Path(__file__).resolve().parents[2]


def _round(r, p1, p10, n, problems, refined=None, fixed=None):
    passed = round(p1 * n * problems)
    entry = {"round": r, "pass@1": p1, "passed": passed, "wrong": n * problems - passed}
    if p10 is not None:
        entry["pass@10"] = p10
    if r:
        entry.update(refined=refined, fixed=fixed, success_rate=fixed / refined if refined else None)
    return entry


def _bench(problems, init, n=10, **methods):
    """init = (p1, p10); each method = [(p1, p10, refined, fixed) per round from 1]."""
    r0 = _round(0, *init, n, problems)
    rounds = {"init": [r0]}
    for method, later in methods.items():
        rounds[method] = [r0] + [_round(r, p1, p10, n, problems, refined, fixed)
                                 for r, (p1, p10, refined, fixed) in enumerate(later, 1)]
    return {"problems": problems, "samples": problems * n, "rounds": rounds}


def make_results(benchmarks, n=10, label="CodeLlama-7B RL", rounds=None, overall=None, **extra):
    methods = sorted({m for b in benchmarks.values() for m in b["rounds"] if m != "init"},
                     key=report.METHODS.index)
    if rounds is None:
        rounds = max(len(e) - 1 for b in benchmarks.values() for e in b["rounds"].values())
    if overall is None:  # problem-weighted, as the loop writes it (here: of the first benchmark's layout)
        first = next(iter(benchmarks.values()))
        total = sum(b["problems"] for b in benchmarks.values())
        overall = {"problems": total, "rounds": copy.deepcopy(first["rounds"])}
    return {"version": 1, "model": "hf:codellama/CodeLlama-7b-hf", "label": label,
            "settings": {"n": n, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 512,
                         "ks": [1, 10], "rounds": rounds, "methods": methods, "few_shot": 0,
                         "refine_temperature": 0.8, "limit": None, "style": "chat"},
            "benchmarks": benchmarks, "overall": overall,
            "throughput": {"seconds": 812.4, "samples_per_s": 12.5}, **extra}


@pytest.fixture
def two_rounds():
    """HumanEval listed before MBPP on purpose: the table must put MBPP first, as the paper."""
    benchmarks = {
        "humaneval": _bench(164, (0.4013, 0.7495),
                            refine=[(0.4512, 0.7788, 40, 10), (0.4633, 0.7801, 30, 3)],
                            explain_refine=[(0.5584, 0.8414, 40, 12), (0.5701, 0.8502, 28, 4)]),
        "mbpp": _bench(500, (0.4342, 0.7209),
                       refine=[(0.5001, 0.7512, 50, 20), (0.5105, 0.7600, 30, 0)],
                       explain_refine=[(0.5792, 0.7897, 50, 25), (0.5833, 0.7950, 25, 5)]),
    }
    overall = {"problems": 664, "rounds": {
        "init": [_round(0, 0.4260, 0.7279, 10, 664)],
        "refine": [_round(0, 0.4260, 0.7279, 10, 664), _round(1, 0.4880, 0.7578, 10, 664, 90, 30),
                   _round(2, 0.4988, 0.7649, 10, 664, 60, 3)],
        "explain_refine": [_round(0, 0.4260, 0.7279, 10, 664), _round(1, 0.5740, 0.8023, 10, 664, 90, 37),
                           _round(2, 0.5797, 0.8085, 10, 664, 53, 9)]}}
    explanations = {"judge": "openai:gpt-4o", "count": 50, "mean": 3.4,
                    "distribution": {"1": 2, "2": 6, "3": 15, "4": 17, "5": 10}, "unparsed": 1}
    return make_results(benchmarks, overall=overall, explanations=explanations)


# ---------------------------------------------------------------------------------------------
# Tables


def test_table2_layout_at_round_1(two_rounds):
    assert report.markdown_table(two_rounds, round=1) == "\n".join([
        "| pass@1/pass@10 (%) | MBPP | HumanEval | Overall |",
        "|:---|---:|---:|---:|",
        "| Init | 43.42/72.09 | 40.13/74.95 | 42.60/72.79 |",
        "| Refine | 50.01/75.12 | 45.12/77.88 | 48.80/75.78 |",
        "| Expl+Refine | 57.92/78.97 | 55.84/84.14 | 57.40/80.23 |"])


def test_table_at_a_later_round_and_the_report_has_both(two_rounds):
    table = report.markdown_table(two_rounds, round=2)
    assert "| Refine | 51.05/76.00 | 46.33/78.01 | 49.88/76.49 |" in table
    assert "| Expl+Refine | 58.33/79.50 | 57.01/85.02 | 57.97/80.85 |" in table
    text = report.render_report(two_rounds)
    assert text.startswith(report.MD_MARKER + "\n# CodeLlama-7B RL\n")
    assert report.markdown_table(two_rounds, 1) in text and table in text
    assert "after the last refinement round (2)" in text
    assert "Throughput: 812 s, 12.50 samples/s." in text
    assert "limit=none" in text and "ks=1,10" in text


def test_success_rate_table(two_rounds):
    assert report.success_rate_table(two_rounds).splitlines()[2:] == [
        "| Refine, round 1 | 40.00 (20/50) | 25.00 (10/40) | 33.33 |",
        "| Refine, round 2 | 0.00 (0/30) | 10.00 (3/30) | 5.00 |",
        "| Expl+Refine, round 1 | 50.00 (25/50) | 30.00 (12/40) | 41.11 |",
        "| Expl+Refine, round 2 | 20.00 (5/25) | 14.29 (4/28) | 16.98 |"]


def test_explanation_line(two_rounds):
    assert report.explanation_line(two_rounds) == (
        "Explanation quality (openai:gpt-4o as judge, 50 explanations of wrong code): mean 3.40 / 5; "
        "scores 1: 2, 2: 6, 3: 15, 4: 17, 5: 10; 1 unparsed.")
    del two_rounds["explanations"]
    assert report.explanation_line(two_rounds) is None
    assert "## Explanations" not in report.render_report(two_rounds)


def test_one_benchmark_small_n_one_method():
    """n < 10 has no pass@10; one benchmark has no Overall column; a method not run has no row."""
    results = make_results({"mbppplus": _bench(378, (0.4246, None), n=5,
                                               refine=[(0.5155, None, 8, 0)])}, n=5)
    results["settings"]["ks"] = [1]
    assert report.markdown_table(results) == "\n".join([
        "| pass@1 (%) | MBPP+ |", "|:---|---:|", "| Init | 42.46 |", "| Refine | 51.55 |"])
    assert report.success_rate_table(results).splitlines()[2] == "| Refine | 0.00 (0/8) |"
    assert "after the last refinement round" not in report.render_report(results)


def test_a_method_missing_on_one_benchmark_gets_a_dash_and_null_rate_reads_n_a():
    results = make_results({
        "mbpp": _bench(500, (0.4342, 0.7209), explain_refine=[(0.5792, 0.7897, 50, 25)]),
        "humanevalplus": _bench(164, (1.0, 1.0), refine=[(1.0, 1.0, 0, 0)],
                                explain_refine=[(1.0, 1.0, 0, 0)])})
    lines = report.markdown_table(results).splitlines()
    assert lines[0] == "| pass@1/pass@10 (%) | MBPP | HumanEval+ | Overall |"
    assert lines[3] == "| Refine | – | 100.00/100.00 | – |"  # this Overall copies MBPP's layout
    success = report.success_rate_table(results).splitlines()
    assert success[2] == "| Refine | – | n/a | – |"
    assert success[3] == "| Expl+Refine | 50.00 (25/50) | n/a | 50.00 |"


def test_init_only_run():
    results = make_results({"humaneval": _bench(164, (0.3013, 0.6495))}, rounds=0)
    assert report.markdown_table(results).splitlines()[2:] == ["| Init | 30.13/64.95 |"]
    assert report.success_rate_table(results) is None
    assert "Success refinement rate" not in report.render_report(results)


def test_unknown_benchmarks_come_after_the_papers_four_under_their_own_name():
    results = make_results({"zeta": _bench(10, (0.1, 0.2)), "humanevalplus": _bench(10, (0.3, 0.4)),
                            "alpha": _bench(10, (0.5, 0.6)), "mbpp": _bench(10, (0.7, 0.8))}, rounds=0)
    assert report.markdown_table(results).splitlines()[0] == (
        "| pass@1/pass@10 (%) | MBPP | HumanEval+ | alpha | zeta | Overall |")


@pytest.mark.parametrize("round_, message", [(3, "ask for round 1 to 2"), (0, "round must be"),
                                             (True, "round must be")])
def test_bad_round(two_rounds, round_, message):
    with pytest.raises(ValueError, match=message):
        report.markdown_table(two_rounds, round=round_)


# ---------------------------------------------------------------------------------------------
# Checking results


def _set(path, value):
    def mutate(results):
        *parents, last = path
        node = results
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return mutate


_DELETE = object()
_REFINE_1 = ["benchmarks", "mbpp", "rounds", "refine", 1]


@pytest.mark.parametrize("mutate, message", [
    (_set(["version"], 2), "field version is 2; this reader knows version 1"),
    (_set(["label"], ""), "field label must be a non-empty string"),
    (_set(["settings", "n"], 0), "field settings.n must be an integer >= 1"),
    (_set(["settings", "methods"], ["reflect"]), "field settings.methods must be a list drawn from"),
    (_set(["benchmarks"], {}), "field benchmarks is empty"),
    (_set(_REFINE_1 + ["pass@1"], _DELETE), r"field benchmarks\.mbpp\.rounds\.refine\[1\]\.pass@1 is missing"),
    (_set(_REFINE_1 + ["pass@10"], _DELETE), r"refine\[1\]\.pass@10 is missing"),
    (_set(_REFINE_1 + ["pass@1"], 50.01), r"refine\[1\]\.pass@1 must be a fraction in \[0, 1\] \(not a percentage\)"),
    (_set(_REFINE_1 + ["pass@1"], True), r"refine\[1\]\.pass@1 must be a finite number"),
    (_set(_REFINE_1 + ["round"], 2), r"refine\[1\]\.round is 2, expected 1"),
    (_set(_REFINE_1 + ["fixed"], 51), r"refine\[1\]\.fixed is 51, more than refined=50"),
    (_set(_REFINE_1 + ["success_rate"], _DELETE), r"refine\[1\]\.success_rate is missing"),
    (_set(["benchmarks", "mbpp", "rounds", "reflect"], []), r"rounds\.reflect is not a known method"),
    (_set(["benchmarks", "mbpp", "rounds", "init"], []), r"rounds\.init must be a list holding round 0"),
    (_set(["overall"], _DELETE), "field overall is missing"),
    (_set(["explanations", "mean"], 7), "field explanations.mean must be a score in"),
    (_set(["explanations", "distribution"], {"6": 1}), "has score '6'"),
])
def test_bad_results_name_the_field(two_rounds, mutate, message):
    mutate(two_rounds)
    with pytest.raises(ResultsError, match=message) as err:
        report.validate_results(two_rounds, source="runs/x/results.json")
    assert str(err.value).startswith("runs/x/results.json:")


def test_pass_at_10_may_be_absent_when_n_is_below_10():
    results = make_results({"mbpp": _bench(5, (0.4, None), n=4, refine=[(0.5, None, 12, 2)])}, n=4)
    assert report.validate_results(results) is results


def test_load_results_from_folder_or_file_and_its_errors(tmp_path, two_rounds):
    (tmp_path / "results.json").write_text(json.dumps(two_rounds))
    assert report.load_results(tmp_path) == two_rounds
    assert report.load_results(tmp_path / "results.json") == two_rounds
    with pytest.raises(ResultsError, match="has no results.json; pass a run folder"):
        report.load_results(tmp_path / "..")
    with pytest.raises(ResultsError, match="does not exist"):
        report.load_results(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ResultsError, match=r"bad\.json is not valid JSON"):
        report.load_results(tmp_path / "bad.json")
    two_rounds["benchmarks"]["mbpp"]["problems"] = -1
    (tmp_path / "results.json").write_text(json.dumps(two_rounds))
    with pytest.raises(ResultsError, match=r"results\.json: field benchmarks\.mbpp\.problems must be"):
        report.load_results(tmp_path)


# ---------------------------------------------------------------------------------------------
# Plots and files


def _check_png(path, min_size=(600, 300)):
    from PIL import Image
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert len(colors) > 50, f"{path} looks blank ({len(colors)} colours)"
    assert plots.is_our_png(path)


def test_write_reports(tmp_path, two_rounds):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("user data")
    paths = report.write_reports(two_rounds, out)
    assert paths == {"table": out / "table.md", "rounds_plot": out / "pass_at_1_by_round.png",
                     "success_plot": out / "success_rate.png"}
    assert paths["table"].read_text() == report.render_report(two_rounds)
    _check_png(paths["rounds_plot"], (1000, 400))
    _check_png(paths["success_plot"])
    assert sorted(p.name for p in out.iterdir()) == sorted(["results.json", *report.OUTPUT_NAMES.values()])
    assert (out / "results.json").read_text() == "user data"
    mode = paths["table"].stat().st_mode & 0o777
    assert mode == (out / "results.json").stat().st_mode & 0o777, "as readable as a plain new file"
    # rerunning replaces its own, derived outputs
    two_rounds["label"] = "CodeLlama-7B SFT"
    report.write_reports(two_rounds, out)
    assert "# CodeLlama-7B SFT" in paths["table"].read_text()


def test_rounds_plot_draws_pass_at_1_per_round(tmp_path, two_rounds):
    fig = report.plot_rounds(two_rounds, tmp_path / "r.png")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["MBPP", "HumanEval", "Overall"]
    lines = {line.get_label(): line for line in visible[0].get_lines()}
    assert list(lines["Refine"].get_xdata()) == [0, 1, 2]
    assert list(lines["Refine"].get_ydata()) == pytest.approx([43.42, 50.01, 51.05])
    assert list(lines["Expl+Refine"].get_ydata()) == pytest.approx([43.42, 57.92, 58.33])


def test_success_plot_bars(tmp_path, two_rounds):
    fig = report.plot_success_rates(two_rounds, tmp_path / "s.png", round=1)
    heights = [round(p.get_height(), 2) for p in fig.axes[0].patches]
    assert heights == [40.0, 25.0, 33.33, 50.0, 30.0, 41.11]  # Refine per column, then Expl+Refine


def test_init_only_still_writes_all_three(tmp_path):
    results = make_results({"humaneval": _bench(164, (0.3013, 0.6495))}, rounds=0)
    paths = report.write_reports(results, tmp_path)
    assert all(p.is_file() for p in paths.values())


@pytest.mark.parametrize("name", ["table.md", "success_rate.png"])
def test_a_users_file_of_the_same_name_is_never_replaced(tmp_path, two_rounds, name):
    (tmp_path / name).write_text("mine")
    with pytest.raises(FileExistsError, match=f"{name} exists and was not written by the evaluation report"):
        report.write_reports(two_rounds, tmp_path)
    assert (tmp_path / name).read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # nothing half written


def test_out_dir_that_is_a_file(tmp_path, two_rounds):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        report.write_reports(two_rounds, tmp_path / "f")


def test_without_matplotlib_the_error_says_how_to_install_it(tmp_path, two_rounds, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install matplotlib==3\.11\.2"):
        report.write_reports(two_rounds, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_library_imports_without_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from ledex_jax.evaluate import compare, plots, report\n"
            "print(report.markdown_table.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "markdown_table", proc.stderr


# ---------------------------------------------------------------------------------------------
# Comparing runs


def _run(label, init, expl, n=10, problems=164, rounds=1):
    later = [(expl + 0.01 * i, min(1.0, expl + 0.2), 40, 10) for i in range(rounds)]
    return compare.Run(label, make_results({
        "mbpp": _bench(500, (init, init + 0.3), n=n, explain_refine=later),
        "humaneval": _bench(problems, (init - 0.03, init + 0.3), n=n, explain_refine=later)},
        n=n, label=label), f"runs/{label}")


@pytest.fixture
def three_runs():
    return [_run("prompt", 0.3820, 0.4342), _run("SFT", 0.4910, 0.5798), _run("RL", 0.4960, 0.5792, rounds=2)]


def test_comparison_table(three_runs):
    lines = compare.comparison_table(three_runs).splitlines()
    assert lines[0] == "| run | method | MBPP | HumanEval | Overall |"
    assert lines[2:] == [
        "| prompt | Init | 38.20/68.20 | 35.20/68.20 | 38.20/68.20 |",
        "| prompt | Expl+Refine | 43.42/63.42 | 43.42/63.42 | 43.42/63.42 |",
        "| SFT | Init | 49.10/79.10 | 46.10/79.10 | 49.10/79.10 |",
        "| SFT | Expl+Refine | 57.98/77.98 | 57.98/77.98 | 57.98/77.98 |",
        "| RL | Init | 49.60/79.60 | 46.60/79.60 | 49.60/79.60 |",
        "| RL | Expl+Refine | 57.92/77.92 | 57.92/77.92 | 57.92/77.92 |"]
    at_2 = compare.comparison_table(three_runs, round=2).splitlines()
    assert at_2[3] == "| prompt | Expl+Refine | – | – | – |"
    assert at_2[7] == "| RL | Expl+Refine | 58.92/77.92 | 58.92/77.92 | 58.92/77.92 |"
    with pytest.raises(ValueError, match="ask for round 1 to 2"):
        compare.comparison_table(three_runs, round=3)


def test_incomparable_runs_are_refused_unless_forced(tmp_path, three_runs):
    assert compare.incomparabilities(three_runs) == []
    three_runs[1] = _run("SFT", 0.4910, 0.5798, n=20, problems=20)
    differences = compare.incomparabilities(three_runs)
    assert differences == ["settings.n differs: prompt=10, SFT=20, RL=10",
                           "humaneval problems differ: prompt=164, SFT=20, RL=164 (a --limit run?)"]
    with pytest.raises(compare.IncomparableRuns, match=r"(?s)settings\.n differs.*pass --force"):
        compare.write_comparison(three_runs, tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()
    paths = compare.write_comparison(three_runs, tmp_path / "cmp", force=True)
    text = paths["table"].read_text()
    assert "**Not directly comparable**" in text and "- settings.n differs" in text


def test_different_benchmark_sets_show_dashes(three_runs):
    del three_runs[0].results["benchmarks"]["humaneval"]
    assert compare.incomparabilities(three_runs) == [
        "benchmarks differ: prompt: mbpp; SFT: mbpp, humaneval; RL: mbpp, humaneval"]
    assert compare.comparison_table(three_runs).splitlines()[2] == "| prompt | Init | 38.20/68.20 | – | 38.20/68.20 |"


def test_runs_need_distinct_labels_and_two_of_them(three_runs):
    with pytest.raises(ValueError, match="runs/SFT and runs/RL are both labelled 'SFT'"):
        compare.comparison_table([three_runs[1], compare.Run("SFT", three_runs[2].results, "runs/RL")])
    with pytest.raises(ValueError, match="at least two runs"):
        compare.comparison_table(three_runs[:1])


def test_write_comparison_files_and_plots(tmp_path, three_runs):
    paths = compare.write_comparison(three_runs, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(compare.COMPARE_NAMES.values())
    text = paths["table"].read_text()
    assert compare.comparison_table(three_runs) in text and "| RL | Expl+Refine | 25.00 (10/40)" in text
    _check_png(paths["rounds_plot"], (800, 300))
    _check_png(paths["success_plot"])
    fig = compare.plot_compare_rounds(three_runs, tmp_path / "again.png")
    mbpp = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert sorted(mbpp) == ["RL · Expl+Refine", "SFT · Expl+Refine", "prompt · Expl+Refine"]
    assert list(mbpp["RL · Expl+Refine"].get_ydata()) == pytest.approx([49.60, 57.92, 58.92])
    assert mbpp["RL · Expl+Refine"].get_color() != mbpp["SFT · Expl+Refine"].get_color()


def _compare_cli(*args):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "compare.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    return proc.returncode, proc.stdout + proc.stderr


def test_compare_cli(tmp_path, three_runs):
    dirs = []
    for run in three_runs:
        (tmp_path / run.label).mkdir()
        (tmp_path / run.label / "results.json").write_text(json.dumps(run.results))
        dirs.append(tmp_path / run.label)
    code, out = _compare_cli(dirs[0], dirs[1], dirs[2] / "results.json", "--out", tmp_path / "cmp",
                             "--labels", "Prompting,SFT,RL")
    assert code == 0, out
    assert out.split() == [str(tmp_path / "cmp" / name) for name in compare.COMPARE_NAMES.values()]
    assert "| Prompting | Init | 38.20/68.20 |" in (tmp_path / "cmp" / "comparison.md").read_text()

    three_runs[2].results["settings"]["temperature"] = 0.2
    (dirs[2] / "results.json").write_text(json.dumps(three_runs[2].results))
    code, out = _compare_cli(*dirs, "--out", tmp_path / "cmp2")
    assert code != 0 and "settings.temperature differs: prompt=0.8, SFT=0.8, RL=0.2" in out
    assert "--force" in out and not (tmp_path / "cmp2").exists()
    code, out = _compare_cli(*dirs, "--out", tmp_path / "cmp2", "--force", "--round", "1")
    assert code == 0, out

    code, out = _compare_cli(dirs[0], "--out", tmp_path / "cmp3")
    assert code != 0 and "at least two runs" in out
    code, out = _compare_cli(dirs[0], tmp_path / "missing", "--out", tmp_path / "cmp3")
    assert code != 0 and "does not exist" in out
