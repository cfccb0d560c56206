"""What people read after an evaluation: results.json checked, Table 2 in Markdown, and plots.

The evaluation loop writes results.json (schema: docs/evaluation.md) and calls `write_reports`,
which derives three files from it: a Markdown report in the layout of the paper's Table 2 (rows
Init / Refine / Expl+Refine, columns MBPP, HumanEval, MBPP+, HumanEval+, Overall, cells
pass@1/pass@10 in percent), pass@1 per refinement round per method (the paper's Fig. 4) and the
success refinement rate per benchmark. The derived files are rewritten on every call; a file of
the same name that this module did not write is never replaced.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ledex_jax.evaluate import plots

RESULTS_VERSION = 1
RESULTS_FILE = "results.json"
BENCHMARK_ORDER = ("mbpp", "humaneval", "mbppplus", "humanevalplus")  # the paper's column order
BENCHMARK_NAMES = {"mbpp": "MBPP", "humaneval": "HumanEval", "mbppplus": "MBPP+",
                   "humanevalplus": "HumanEval+"}
METHODS = ("refine", "explain_refine")
ROW_NAMES = {"init": "Init", "refine": "Refine", "explain_refine": "Expl+Refine"}
OVERALL = "Overall"
OUTPUT_NAMES = {"table": "table.md", "rounds_plot": "pass_at_1_by_round.png",
                "success_plot": "success_rate.png"}
# First line of every Markdown file written here: marks it as derived, hence safe to rewrite.
MD_MARKER = "<!-- ledex-jax evaluation report: derived from results.json, rewritten on every run -->"
METHOD_STYLES = {"Init": {"color": "tab:gray"}, "Refine": {"color": "tab:orange", "marker": "s"},
                 "Expl+Refine": {"color": "tab:blue", "marker": "o"}}
MISSING = "–"


class ResultsError(ValueError):
    """A results dict or file that does not follow the results.json schema."""


# ---------------------------------------------------------------------------------------------
# Loading and checking


def load_results(path: str | os.PathLike) -> dict:
    """Reads and checks results.json; ``path`` is the file or the run folder that holds it."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        where = f"{path} has no {RESULTS_FILE}" if path.is_dir() else f"{path} does not exist"
        raise ResultsError(f"{where}; pass a run folder the evaluation wrote, or its {RESULTS_FILE}")
    try:
        results = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(f"{file} is not valid JSON ({err}); is it a results.json the evaluation "
                           "wrote?") from None
    return validate_results(results, source=str(file))


class _Checker:
    """Field checks whose errors name the source, the field's path and what was expected."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str):
        field = f" field {where}" if where else ""
        raise ResultsError(f"{self.source}:{field} {problem} (the results.json schema is in "
                           "docs/evaluation.md)")

    def get(self, mapping: Mapping, key: str, where: str, required: bool = True):
        if key not in mapping:
            if required:
                self.fail(f"{where}.{key}" if where else key, "is missing")
            return None
        return mapping[key]

    def mapping(self, value, where: str) -> Mapping:
        if not isinstance(value, Mapping):
            self.fail(where, f"must be a JSON object, got {type(value).__name__}")
        return value

    def integer(self, value, where: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(where, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def number(self, value, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(where, f"must be a finite number, got {value!r}")
        return value

    def fraction(self, value, where: str) -> float:
        if self.number(value, where) < 0 or value > 1:
            self.fail(where, f"must be a fraction in [0, 1] (not a percentage), got {value!r}")
        return value

    def text(self, value, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"must be a non-empty string, got {value!r}")
        return value


def validate_results(results, source: str = "results") -> dict:
    """Checks ``results`` against the results.json schema and returns it unchanged.

    Raises ResultsError naming ``source`` (a file, or who passed the dict) and the bad field."""
    check = _Checker(source)
    check.mapping(results, "(top level)")
    version = check.get(results, "version", "")
    if version != RESULTS_VERSION:
        check.fail("version", f"is {version!r}; this reader knows version {RESULTS_VERSION}")
    check.text(check.get(results, "model", ""), "model")
    check.text(check.get(results, "label", ""), "label")
    settings = check.mapping(check.get(results, "settings", ""), "settings")
    n = check.integer(check.get(settings, "n", "settings"), "settings.n", minimum=1)
    ks = check.get(settings, "ks", "settings")
    if not isinstance(ks, list) or not ks:
        check.fail("settings.ks", f"must be a non-empty list of k for pass@k, got {ks!r}")
    for i, k in enumerate(ks):
        check.integer(k, f"settings.ks[{i}]", minimum=1)
    check.integer(check.get(settings, "rounds", "settings"), "settings.rounds")
    methods = check.get(settings, "methods", "settings")
    if not isinstance(methods, list) or any(m not in METHODS for m in methods):
        check.fail("settings.methods", f"must be a list drawn from {list(METHODS)}, got {methods!r}")
    required_ks = sorted({k for k in ks if k <= n} | {1})

    benchmarks = check.mapping(check.get(results, "benchmarks", ""), "benchmarks")
    if not benchmarks:
        check.fail("benchmarks", "is empty; the evaluation scored no benchmark")
    for name, entry in benchmarks.items():
        where = f"benchmarks.{name}"
        check.mapping(entry, where)
        check.integer(check.get(entry, "problems", where), f"{where}.problems", minimum=1)
        if "samples" in entry:
            check.integer(entry["samples"], f"{where}.samples")
        _check_rounds(check, check.get(entry, "rounds", where), f"{where}.rounds", required_ks)
    overall = check.mapping(check.get(results, "overall", ""), "overall")
    check.integer(check.get(overall, "problems", "overall"), "overall.problems", minimum=1)
    _check_rounds(check, check.get(overall, "rounds", "overall"), "overall.rounds", required_ks)

    if "throughput" in results:
        throughput = check.mapping(results["throughput"], "throughput")
        for key in ("seconds", "samples_per_s"):
            if key in throughput:
                check.number(throughput[key], f"throughput.{key}")
    if "explanations" in results:
        _check_explanations(check, results["explanations"])
    return results


def _check_rounds(check: _Checker, rounds, where: str, required_ks: list[int]) -> None:
    check.mapping(rounds, where)
    for method in rounds:
        if method != "init" and method not in METHODS:
            check.fail(f"{where}.{method}", f"is not a known method; known: init, {', '.join(METHODS)}")
    init = check.get(rounds, "init", where)
    if not isinstance(init, list) or len(init) != 1:
        check.fail(f"{where}.init", f"must be a list holding round 0 only, got {init!r}")
    for method, entries in rounds.items():
        if not isinstance(entries, list) or not entries:
            check.fail(f"{where}.{method}", f"must be a non-empty list of rounds, got {entries!r}")
        for r, entry in enumerate(entries):
            _check_round(check, entry, f"{where}.{method}[{r}]", r, required_ks)


def _check_round(check: _Checker, entry, where: str, r: int, required_ks: list[int]) -> None:
    check.mapping(entry, where)
    if check.get(entry, "round", where) != r:
        check.fail(f"{where}.round", f"is {entry['round']!r}, expected {r} (entries are listed in "
                   "round order from 0)")
    for k in required_ks:
        check.fraction(check.get(entry, f"pass@{k}", where), f"{where}.pass@{k}")
    for key, value in entry.items():
        if key.startswith("pass@"):
            check.fraction(value, f"{where}.{key}")
        elif key in ("passed", "wrong", "refined", "fixed"):
            check.integer(value, f"{where}.{key}")
    if r == 0:
        return
    rate = check.get(entry, "success_rate", where)
    if rate is not None:
        check.fraction(rate, f"{where}.success_rate")
    if "fixed" in entry and "refined" in entry and entry["fixed"] > entry["refined"]:
        check.fail(f"{where}.fixed", f"is {entry['fixed']}, more than refined={entry['refined']}")


def _check_explanations(check: _Checker, explanations) -> None:
    where = "explanations"
    check.mapping(explanations, where)
    check.text(check.get(explanations, "judge", where), f"{where}.judge")
    check.integer(check.get(explanations, "count", where), f"{where}.count")
    mean = check.get(explanations, "mean", where)
    if mean is not None and not 1 <= check.number(mean, f"{where}.mean") <= 5:
        check.fail(f"{where}.mean", f"must be a score in [1, 5] or null, got {mean!r}")
    distribution = check.mapping(check.get(explanations, "distribution", where), f"{where}.distribution")
    for score, count in distribution.items():
        if score not in {"1", "2", "3", "4", "5"}:
            check.fail(f"{where}.distribution", f"has score {score!r}; scores are \"1\" to \"5\"")
        check.integer(count, f"{where}.distribution.{score}")
    if "unparsed" in explanations:
        check.integer(explanations["unparsed"], f"{where}.unparsed")


# ---------------------------------------------------------------------------------------------
# Reading values out of checked results


def benchmark_names(results: Mapping) -> list[str]:
    """The run's benchmarks, the paper's four in its column order, any others after them by name."""
    names = list(results["benchmarks"])
    return ([b for b in BENCHMARK_ORDER if b in names]
            + sorted(b for b in names if b not in BENCHMARK_ORDER))


def display_name(benchmark: str) -> str:
    return BENCHMARK_NAMES.get(benchmark, benchmark)


def columns(results: Mapping) -> list[tuple[str, Mapping]]:
    """(header, rounds) per table column: each benchmark, then Overall when there are several."""
    cols = [(display_name(b), results["benchmarks"][b]["rounds"]) for b in benchmark_names(results)]
    if len(cols) > 1:
        cols.append((OVERALL, results["overall"]["rounds"]))
    return cols


def methods_run(results: Mapping) -> list[str]:
    """The refinement methods present for at least one benchmark, in the paper's row order."""
    present = {m for entry in results["benchmarks"].values() for m in entry["rounds"]}
    return [m for m in METHODS if m in present]


def last_round(results: Mapping) -> int:
    """The highest refinement round any method reached (0 when only Init was run)."""
    return max((len(entries) - 1 for entry in results["benchmarks"].values()
                for m, entries in entry["rounds"].items() if m != "init"), default=0)


def shown_ks(results: Mapping) -> list[int]:
    """k shown in the cells: 1 and the largest other k the run has (10 for the paper's n=100)."""
    n = results["settings"]["n"]
    larger = [k for k in results["settings"]["ks"] if 1 < k <= n]
    return [1, max(larger)] if larger else [1]


def round_entry(rounds: Mapping, method: str, r: int) -> Mapping | None:
    """The entry of ``method`` ('init' or a refinement method) at round ``r``, or None if absent."""
    entries = rounds.get(method)
    if method == "init":
        r = 0
    return entries[r] if entries is not None and r < len(entries) else None


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def format_pass(entry: Mapping | None, ks: list[int]) -> str:
    """'43.42/72.09' (pass@1/pass@10 in percent, as the paper prints them); '–' if absent."""
    if entry is None:
        return MISSING
    return "/".join(percent(entry[f"pass@{k}"]) for k in ks)


def format_success(entry: Mapping | None, with_counts: bool = True) -> str:
    """'57.12 (1234/2160)': the rate in percent and fixed/refined; 'n/a' when nothing was wrong."""
    if entry is None:
        return MISSING
    if entry["success_rate"] is None:
        return "n/a"
    cell = percent(entry["success_rate"])
    if with_counts and "fixed" in entry and "refined" in entry:
        cell += f" ({entry['fixed']}/{entry['refined']})"
    return cell


def format_setting(value) -> str:
    """A settings value as results.json holds it (null, lists) in plain words."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _check_round_arg(results: Mapping, round: int) -> int:
    if isinstance(round, bool) or not isinstance(round, int) or round < 1:
        raise ValueError(f"round must be a refinement round >= 1, got {round!r}")
    last = last_round(results)
    if methods_run(results) and round > last:
        raise ValueError(f"round={round}, but {results['label']!r} refined for {last} round(s) "
                         f"(settings.rounds={results['settings']['rounds']}); ask for round 1 to {last}")
    return round


# ---------------------------------------------------------------------------------------------
# Markdown


def markdown_rows(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """A Markdown table: the first ``text_columns`` left-aligned, the numbers after them
    right-aligned."""
    align = [":---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align[:len(header)]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_table(results: Mapping, round: int = 1) -> str:
    """Table 2's layout: rows Init / Refine / Expl+Refine (refinement rows at ``round``), columns
    the benchmarks (+ Overall), cells pass@1/pass@10 in percent. Methods not run get no row; a
    benchmark a method skipped gets '–'."""
    validate_results(results, "results given to markdown_table")
    _check_round_arg(results, round)
    ks = shown_ks(results)
    cols = columns(results)
    header = ["/".join(f"pass@{k}" for k in ks) + " (%)"] + [name for name, _ in cols]
    rows = [[ROW_NAMES[method]] + [format_pass(round_entry(rounds, method, round), ks)
                                   for _, rounds in cols]
            for method in ["init", *methods_run(results)]]
    return markdown_rows(header, rows)


def success_rate_table(results: Mapping) -> str | None:
    """Success refinement rate (share of wrong solutions whose refinement passes) per method and
    round, columns the benchmarks (+ Overall); None when no refinement method was run."""
    validate_results(results, "results given to success_rate_table")
    methods = methods_run(results)
    if not methods:
        return None
    cols = columns(results)
    last = last_round(results)
    header = ["success rate % (fixed/refined)"] + [name for name, _ in cols]
    rows = []
    for method in methods:
        for r in range(1, last + 1):
            label = ROW_NAMES[method] + (f", round {r}" if last > 1 else "")
            rows.append([label] + [format_success(round_entry(rounds, method, r), name != OVERALL)
                                   for name, rounds in cols])
    return markdown_rows(header, rows)


def explanation_line(results: Mapping) -> str | None:
    """The LLM judge's 1–5 explanation scores in one line, or None when none were judged."""
    ex = results.get("explanations")
    if not ex:
        return None
    mean = "no score parsed" if ex["mean"] is None else f"mean {ex['mean']:.2f} / 5"
    dist = ", ".join(f"{s}: {ex['distribution'].get(s, 0)}" for s in "12345")
    unparsed = f"; {ex['unparsed']} unparsed" if ex.get("unparsed") else ""
    return (f"Explanation quality ({ex['judge']} as judge, {ex['count']} explanations of wrong "
            f"code): {mean}; scores {dist}{unparsed}.")


def render_report(results: Mapping, round: int = 1) -> str:
    """The whole Markdown report: settings, Table 2 at ``round`` (and after the last round when
    there are more), the success refinement rates, explanation scores and throughput."""
    validate_results(results, "results given to render_report")
    _check_round_arg(results, round)
    ks = shown_ks(results)
    metric = "/".join(f"pass@{k}" for k in ks)
    settings = ", ".join(f"{k}={format_setting(v)}" for k, v in results["settings"].items())
    parts = [MD_MARKER, f"# {results['label']}", "",
             f"Model `{results['model']}`. Settings: {settings}.", "",
             f"## {metric} (%) after refinement round {round} (the paper's Table 2 layout)", "",
             markdown_table(results, round), "",
             "Init: the first n samples per problem. Refine / Expl+Refine: each failing sample refined once more "
             "per round from its test feedback (Expl+Refine explains the bug first), pass@k "
             "recomputed with the failing samples replaced by their refinements."
             + (" Overall: problem-weighted over the benchmarks." if len(results["benchmarks"]) > 1 else "")]
    last = last_round(results)
    if methods_run(results) and last != round:
        parts += ["", f"## {metric} (%) after the last refinement round ({last})", "",
                  markdown_table(results, last)]
    success = success_rate_table(results)
    if success:
        parts += ["", "## Success refinement rate (%)", "",
                  "Share of the wrong solutions given to a round whose refinement passes "
                  "(fixed/refined samples).", "", success]
    explanation = explanation_line(results)
    if explanation:
        parts += ["", "## Explanations", "", explanation]
    throughput = results.get("throughput") or {}
    if "seconds" in throughput or "samples_per_s" in throughput:
        bits = []
        if "seconds" in throughput:
            bits.append(f"{throughput['seconds']:.0f} s")
        if "samples_per_s" in throughput:
            bits.append(f"{throughput['samples_per_s']:.2f} samples/s")
        parts += ["", f"Throughput: {', '.join(bits)}."]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# Plots


def round_series(rounds: Mapping) -> dict[str, list[tuple[int, float]]]:
    """Row name -> [(round, pass@1 %)] for each refinement method (round 0 is Init); Init alone
    when no refinement method was run."""
    series = {ROW_NAMES[m]: [(e["round"], 100 * e["pass@1"]) for e in rounds[m]]
              for m in METHODS if m in rounds}
    return series or {ROW_NAMES["init"]: [(0, 100 * rounds["init"][0]["pass@1"])]}


def plot_rounds(results: Mapping, path: Path):
    """pass@1 per refinement round per method, a subplot per benchmark (+ Overall): Fig. 4."""
    validate_results(results, "results given to plot_rounds")
    panels = {name: round_series(rounds) for name, rounds in columns(results)}
    return plots.draw_round_curves(panels, path, title=f"{results['label']}: pass@1 per refinement round",
                                   styles=METHOD_STYLES)


def plot_success_rates(results: Mapping, path: Path, round: int = 1):
    """Success refinement rate at ``round`` per benchmark (+ Overall), a bar per method."""
    validate_results(results, "results given to plot_success_rates")
    _check_round_arg(results, round)
    cols = columns(results)
    series = {}
    for method in methods_run(results):
        values = []
        for _, rounds in cols:
            entry = round_entry(rounds, method, round)
            values.append(None if entry is None or entry["success_rate"] is None
                          else 100 * entry["success_rate"])
        series[ROW_NAMES[method]] = values
    return plots.draw_grouped_bars(
        [name for name, _ in cols], series, path, ylabel="success refinement rate (%)",
        title=f"{results['label']}: wrong solutions fixed by refinement round {round}",
        styles=METHOD_STYLES, empty_note="no refinement method was run")


# ---------------------------------------------------------------------------------------------
# Files


def check_overwritable(path: Path) -> None:
    """Refuses to replace a file this module did not write (a report is derived, a user's file
    is not)."""
    path = Path(path)
    if not path.exists():
        return
    if path.is_file():
        if path.suffix == ".png" and plots.is_our_png(path):
            return
        if path.suffix == ".md":
            with path.open(encoding="utf-8", errors="replace") as f:
                if f.readline().rstrip("\n") == MD_MARKER:
                    return
    raise FileExistsError(f"{path} exists and was not written by the evaluation report; move it "
                          "away or write the report to another folder")


def write_text_atomic(path: Path, text: str) -> Path:
    """Writes ``text`` to ``path`` in one step (a temp file renamed over it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        plots.move_into_place(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def prepare_out_dir(out_dir: str | os.PathLike, names: Mapping[str, str]) -> dict[str, Path]:
    """Creates ``out_dir`` and returns key -> path for ``names``, after checking that every path
    is free or ours, and that matplotlib is there, so nothing is half written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is a file; give a folder for the report")
    paths = {key: out_dir / name for key, name in names.items()}
    for path in paths.values():
        check_overwritable(path)
    plots.require_matplotlib()
    out_dir.mkdir(parents=True, exist_ok=True)
    return paths


def write_reports(results: Mapping, out_dir: str | os.PathLike, round: int = 1) -> dict[str, Path]:
    """Writes table.md, pass_at_1_by_round.png and success_rate.png into ``out_dir``.

    Returns {"table": ..., "rounds_plot": ..., "success_plot": ...}. Touches no other file, and
    refuses (before writing anything) to replace a file of those names that it did not write."""
    validate_results(results, "results given to write_reports")
    _check_round_arg(results, round)
    paths = prepare_out_dir(out_dir, OUTPUT_NAMES)
    write_text_atomic(paths["table"], render_report(results, round))
    plot_rounds(results, paths["rounds_plot"])
    plot_success_rates(results, paths["success_plot"], round)
    return paths
