"""Several evaluated runs (prompting / SFT / RL) side by side: one Markdown table in the layout of
the paper's Table 2 (rows run × method, columns benchmarks), pass@1 per round and success rates
in one plot each.

Runs are compared only when their numbers mean the same thing: the same samples per problem,
sampling settings and problems per benchmark. Otherwise `write_comparison` refuses unless forced,
and a forced comparison lists the differences above its table.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledex_jax.evaluate import plots
from ledex_jax.evaluate.report import (
    MD_MARKER, METHODS, MISSING, OVERALL, ROW_NAMES, benchmark_names, display_name, format_pass,
    format_setting, format_success, last_round, load_results, markdown_rows, methods_run,
    prepare_out_dir, round_entry, shown_ks, validate_results, write_text_atomic)

COMPARE_NAMES = {"table": "comparison.md", "rounds_plot": "compare_pass_at_1_by_round.png",
                 "success_plot": "compare_success_rate.png"}
# Settings that change what pass@k measures. few_shot and style are left out on purpose: the
# prompting baseline and a fine-tuned model are meant to be prompted differently.
COMPARED_SETTINGS = ("n", "ks", "temperature", "top_p", "max_new_tokens", "refine_temperature", "limit")
RUN_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
              "tab:pink", "tab:gray", "tab:olive", "tab:cyan")
METHOD_LINES = {"init": {"linestyle": ":", "marker": "D"},
                "refine": {"linestyle": "--", "marker": "s", "hatch": "//"},
                "explain_refine": {"linestyle": "-", "marker": "o"}}


class IncomparableRuns(ValueError):
    """Runs whose settings make their numbers mean different things."""


@dataclass(frozen=True)
class Run:
    """One evaluated run: its label in tables and legends, its checked results, where they came from."""
    label: str
    results: Mapping
    source: str


def load_runs(paths: Sequence[str | os.PathLike], labels: Sequence[str] | None = None) -> list[Run]:
    """Reads each run folder (or results.json); ``labels`` replace the runs' own labels."""
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} runs; give one label per run, in order")
    runs = []
    for i, path in enumerate(paths):
        results = load_results(path)
        runs.append(Run(labels[i] if labels is not None else results["label"], results, str(path)))
    return runs


def check_runs(runs: Sequence[Run]) -> None:
    """At least two runs, each valid, with distinct labels (they name rows and legend entries)."""
    if len(runs) < 2:
        raise ValueError(f"a comparison needs at least two runs, got {len(runs)}; one run's own "
                         "report (table.md) is written by the evaluation")
    seen = {}
    for run in runs:
        validate_results(run.results, run.source)
        if run.label in seen:
            raise ValueError(f"{seen[run.label]} and {run.source} are both labelled {run.label!r}; "
                             "give the runs distinct labels (scripts/compare.py --labels)")
        seen[run.label] = run.source


def incomparabilities(runs: Sequence[Run]) -> list[str]:
    """Why the runs' numbers are not comparable, one line per difference; empty when they are."""
    problems = []
    for key in COMPARED_SETTINGS:
        values = {run.label: run.results["settings"].get(key) for run in runs}
        if len({repr(v) for v in values.values()}) > 1:
            problems.append(f"settings.{key} differs: " + ", ".join(
                f"{label}={format_setting(v)}" for label, v in values.items()))
    sets = {run.label: benchmark_names(run.results) for run in runs}
    if len({tuple(s) for s in sets.values()}) > 1:
        problems.append("benchmarks differ: " + "; ".join(
            f"{label}: {', '.join(s)}" for label, s in sets.items()))
    for benchmark in _union_benchmarks(runs):
        counts = {run.label: run.results["benchmarks"][benchmark]["problems"]
                  for run in runs if benchmark in run.results["benchmarks"]}
        if len(set(counts.values())) > 1:
            problems.append(f"{benchmark} problems differ: " + ", ".join(
                f"{label}={count}" for label, count in counts.items()) + " (a --limit run?)")
    return problems


def _union_benchmarks(runs: Sequence[Run]) -> list[str]:
    merged = {b: None for run in runs for b in run.results["benchmarks"]}
    return benchmark_names({"benchmarks": merged})


def _columns(runs: Sequence[Run], run: Run) -> list[tuple[str, Mapping | None]]:
    """(header, rounds or None) for every benchmark any run has, then Overall when several."""
    names = _union_benchmarks(runs)
    cols = [(display_name(b), run.results["benchmarks"].get(b, {}).get("rounds")) for b in names]
    if len(names) > 1:
        cols.append((OVERALL, run.results["overall"]["rounds"]))
    return cols


def _shown_ks(runs: Sequence[Run]) -> list[int]:
    options = {tuple(shown_ks(run.results)) for run in runs}
    return list(options.pop()) if len(options) == 1 else [1]


def _check_round(runs: Sequence[Run], round: int) -> int:
    if isinstance(round, bool) or not isinstance(round, int) or round < 1:
        raise ValueError(f"round must be a refinement round >= 1, got {round!r}")
    last = max(last_round(run.results) for run in runs)
    if last and round > last:
        raise ValueError(f"round={round}, but no run refined for more than {last} round(s); "
                         f"ask for round 1 to {last}")
    return round


def _rows(run: Run) -> list[str]:
    return ["init", *methods_run(run.results)]


def comparison_table(runs: Sequence[Run], round: int = 1) -> str:
    """Rows run × method (Init, Refine, Expl+Refine at ``round``), columns the benchmarks
    (+ Overall), cells pass@1/pass@10 in percent; '–' where a run lacks a benchmark or round."""
    check_runs(runs)
    _check_round(runs, round)
    ks = _shown_ks(runs)
    header = ["run", "method"] + [n for n, _ in _columns(runs, runs[0])]
    rows = []
    for run in runs:
        for method in _rows(run):
            rows.append([run.label, ROW_NAMES[method]] + [
                MISSING if rounds is None else format_pass(round_entry(rounds, method, round), ks)
                for _, rounds in _columns(runs, run)])
    return markdown_rows(header, rows, text_columns=2)


def comparison_success_table(runs: Sequence[Run], round: int = 1) -> str | None:
    """Success refinement rate at ``round``, rows run × method; None when no run refined."""
    check_runs(runs)
    _check_round(runs, round)
    if not any(methods_run(run.results) for run in runs):
        return None
    header = ["run", "method"] + [n for n, _ in _columns(runs, runs[0])]
    rows = []
    for run in runs:
        for method in methods_run(run.results):
            rows.append([run.label, ROW_NAMES[method]] + [
                MISSING if rounds is None else format_success(round_entry(rounds, method, round),
                                                              name != OVERALL)
                for name, rounds in _columns(runs, run)])
    return markdown_rows(header, rows, text_columns=2)


def settings_table(runs: Sequence[Run]) -> str:
    """Where each run came from and the settings that matter for comparing it."""
    keys = [k for k in ("n", "temperature", "top_p", "max_new_tokens", "rounds", "methods",
                        "few_shot", "refine_temperature", "limit", "style")
            if any(k in run.results["settings"] for run in runs)]
    rows = [[run.label, f"`{run.results['model']}`", f"`{run.source}`"]
            + [format_setting(run.results["settings"].get(k)) for k in keys] for run in runs]
    return markdown_rows(["run", "model", "results"] + keys, rows, text_columns=len(keys) + 3)


def render_comparison(runs: Sequence[Run], round: int = 1) -> str:
    """The comparison report: the runs' settings, any differences, pass@k and success tables."""
    check_runs(runs)
    ks = _shown_ks(runs)
    differences = incomparabilities(runs)
    parts = [MD_MARKER, "# Comparison: " + ", ".join(run.label for run in runs), "",
             settings_table(runs)]
    if differences:
        parts += ["", "**Not directly comparable** (compared anyway, --force):", ""]
        parts += [f"- {line}" for line in differences]
    parts += ["", f"## {'/'.join(f'pass@{k}' for k in ks)} (%) after refinement round {round}", "",
              comparison_table(runs, round)]
    success = comparison_success_table(runs, round)
    if success:
        parts += ["", f"## Success refinement rate (%) at round {round} (fixed/refined samples)", "",
                  success]
    explained = [run for run in runs if run.results.get("explanations")]
    if explained:
        parts += ["", "## Explanation scores (1–5, LLM judge)", ""]
        parts += [f"- {run.label}: " + ("no score parsed" if run.results["explanations"]["mean"] is None
                                         else f"mean {run.results['explanations']['mean']:.2f}")
                  + f" over {run.results['explanations']['count']} explanations "
                    f"({run.results['explanations']['judge']})" for run in explained]
    return "\n".join(parts) + "\n"


def _styles(runs: Sequence[Run]) -> dict[str, dict]:
    return {_series_label(run, method): {"color": RUN_COLORS[i % len(RUN_COLORS)], **METHOD_LINES[method]}
            for i, run in enumerate(runs) for method in ("init", *METHODS)}


def _series_label(run: Run, method: str) -> str:
    return f"{run.label} · {ROW_NAMES[method]}"


def plot_compare_rounds(runs: Sequence[Run], path: Path):
    """pass@1 per refinement round, a subplot per benchmark (+ Overall), a colour per run and a
    line style per method."""
    check_runs(runs)
    panels = {}
    for run in runs:
        for name, rounds in _columns(runs, run):
            panel = panels.setdefault(name, {})
            if rounds is None:
                continue
            methods = [m for m in METHODS if m in rounds] or ["init"]
            for method in methods:
                panel[_series_label(run, method)] = [(e["round"], 100 * e["pass@1"]) for e in rounds[method]]
    return plots.draw_round_curves(panels, path, title="pass@1 per refinement round",
                                   styles=_styles(runs), annotate=False)


def plot_compare_success(runs: Sequence[Run], path: Path, round: int = 1):
    """Success refinement rate at ``round`` per benchmark (+ Overall), a bar per run and method."""
    check_runs(runs)
    _check_round(runs, round)
    groups = [name for name, _ in _columns(runs, runs[0])]
    series = {}
    for run in runs:
        for method in methods_run(run.results):
            values = []
            for _, rounds in _columns(runs, run):
                entry = None if rounds is None else round_entry(rounds, method, round)
                values.append(None if entry is None or entry["success_rate"] is None
                              else 100 * entry["success_rate"])
            series[_series_label(run, method)] = values
    return plots.draw_grouped_bars(groups, series, path, ylabel="success refinement rate (%)",
                                   title=f"Wrong solutions fixed by refinement round {round}",
                                   styles=_styles(runs), empty_note="no run refined")


def write_comparison(runs: Sequence[Run], out_dir: str | os.PathLike, round: int = 1,
                     force: bool = False) -> dict[str, Path]:
    """Writes comparison.md, compare_pass_at_1_by_round.png and compare_success_rate.png.

    Raises IncomparableRuns (before writing anything) when the runs' settings differ, unless
    ``force``; never replaces a file of those names that it did not write."""
    check_runs(runs)
    _check_round(runs, round)
    differences = incomparabilities(runs)
    if differences and not force:
        raise IncomparableRuns(
            "these runs are not comparable:\n" + "\n".join(f"  - {line}" for line in differences)
            + "\nevaluate them with the same settings, or pass --force to compare them anyway "
              "(the report then lists these differences)")
    paths = prepare_out_dir(out_dir, COMPARE_NAMES)
    write_text_atomic(paths["table"], render_comparison(runs, round))
    plot_compare_rounds(runs, paths["rounds_plot"])
    plot_compare_success(runs, paths["success_plot"], round)
    return paths
