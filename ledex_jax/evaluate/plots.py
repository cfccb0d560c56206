"""Drawing for the evaluation report: curves over refinement rounds and grouped bars, as PNG.

Knows nothing of results.json; `report` and `compare` turn results into the series drawn here.
matplotlib is imported on first use (the library imports without it) and only through its
object-oriented API with an Agg canvas, so drawing never switches the backend of a process that
has its own (a notebook, a GUI).
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

MATPLOTLIB_PIN = "matplotlib==3.11.2"
# Written into every PNG's metadata, so a later run can tell its own outputs from a user's files.
PNG_MARKER = "ledex-jax evaluation report"

Point = tuple[int, float]


def require_matplotlib():
    """The matplotlib module, or an ImportError that says how to install it.

    Call it before long work (an evaluation loop) to fail at the start rather than at the end."""
    try:
        import matplotlib
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"the evaluation plots need matplotlib ({err}); install it with "
            f"`pip install {MATPLOTLIB_PIN}` (or `pip install -e '.[eval]'`)") from None
    return matplotlib


def _new_figure(width: float, height: float):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def move_into_place(tmp: str | os.PathLike, path: Path) -> None:
    """Renames a finished temp file over ``path``, with the permissions a plain new file would
    get (mkstemp makes it owner-only, and a report is for others to read too)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def save_figure(fig, path: Path) -> Path:
    """Writes ``fig`` as a PNG at ``path`` in one step (a temp file renamed over it), marked as ours."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", metadata={"Software": PNG_MARKER})
        move_into_place(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def is_our_png(path: Path) -> bool:
    """Whether ``path`` is a PNG that `save_figure` wrote (its metadata carries the marker)."""
    data = Path(path).read_bytes()
    return data.startswith(b"\x89PNG") and PNG_MARKER.encode("latin-1") in data


def line_style(style: Mapping) -> dict:
    """The keywords of a series style that a line takes."""
    return {k: v for k, v in style.items() if k in ("color", "linestyle", "marker", "linewidth", "alpha")}


def draw_round_curves(panels: Mapping[str, Mapping[str, Sequence[Point]]], path: Path, *, title: str,
                      ylabel: str = "pass@1 (%)", styles: Mapping[str, Mapping] | None = None,
                      annotate: bool = True):
    """One subplot per panel (a benchmark), one line per series (a method, or run and method),
    x = refinement round (0 is the initial generation), y = the value at that round.

    ``styles`` maps a series label to keywords; the line ones (color, linestyle, marker,
    linewidth, alpha) are used, so one style table serves lines and bars.
    Returns the Figure after saving it to ``path``."""
    if not panels:
        raise ValueError("draw_round_curves: nothing to draw (no panels)")
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure(max(6.0, 4.2 * ncols), 3.4 * nrows + 0.9)  # room for the title over one panel
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    styles = styles or {}
    handles = {}
    last_round = max((r for series in panels.values() for pts in series.values() for r, _ in pts),
                     default=0)
    for ax, (panel, series) in zip(axes, panels.items()):
        annotated = set()  # the methods share round 0: label that point once
        for label, points in series.items():
            if not points:
                continue
            xs, ys = zip(*points)
            style = {"marker": "o", **line_style(styles.get(label, {}))}
            (line,) = ax.plot(xs, ys, label=label, **style)
            handles.setdefault(label, line)
            if annotate:
                for x, y in points:
                    if (x, round(y, 1)) in annotated:
                        continue
                    annotated.add((x, round(y, 1)))
                    ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6),
                                ha="center", fontsize=7, color=line.get_color())
        ax.set_title(panel)
        ax.set_xticks(range(last_round + 1))
        ax.set_xlim(-0.3, last_round + 0.3)
        ax.set_xlabel("refinement round (0 = initial)")
        ax.set_ylabel(ylabel)
        ax.margins(y=0.15)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncols=min(len(handles), 4), fontsize=8)
    save_figure(fig, path)
    return fig


def bar_style(style: Mapping) -> dict:
    """The keywords of a series style that a bar takes."""
    return {k: v for k, v in style.items() if k in ("color", "hatch", "alpha")}


def draw_grouped_bars(groups: Sequence[str], series: Mapping[str, Sequence[float | None]], path: Path, *,
                      title: str, ylabel: str, styles: Mapping[str, Mapping] | None = None,
                      empty_note: str = "nothing to show"):
    """Grouped bars: one group per entry of ``groups`` (benchmarks), one bar per series (a method,
    or run and method); ``None`` (not run, or nothing to refine) leaves a gap marked "n/a".

    ``styles`` maps a series label to keywords; the bar ones (color, hatch, alpha) are used, so
    the line styles of `draw_round_curves` can be passed as they are. Returns the saved Figure."""
    for label, values in series.items():
        if len(values) != len(groups):
            raise ValueError(f"draw_grouped_bars: series {label!r} has {len(values)} values for "
                             f"{len(groups)} groups")
    fig = _new_figure(max(6.5, 3.0 + len(groups) * (0.3 * max(len(series), 1) + 0.5)), 4.2)
    ax = fig.add_subplot()
    styles = styles or {}
    width = 0.8 / max(len(series), 1)
    labelled = set()
    for i, (label, values) in enumerate(series.items()):
        for g, value in enumerate(values):
            x = g - 0.4 + width * (i + 0.5)
            if value is None:
                ax.text(x, 1, "n/a", ha="center", va="bottom", fontsize=6, rotation=90, color="0.4")
                continue
            bar = ax.bar(x, value, width, label=None if label in labelled else label,
                         edgecolor="black", linewidth=0.5, **bar_style(styles.get(label, {})))
            labelled.add(label)
            ax.bar_label(bar, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    if labelled:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        ax.set_ylim(0, 100)
        ax.text(0.5, 0.5, empty_note, transform=ax.transAxes, ha="center", va="center")
    save_figure(fig, path)
    return fig
