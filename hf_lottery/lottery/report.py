"""The run's results: a table of every level (dense level 0 first) and the sparsity-vs-metric plot.

With a test split, both show each level's held-out score beside its validation score: levels are chosen on
validation, so only the test score is free of that choice. With replicates (``hf_lottery/lottery/replicates.py``), the
metric is each level's mean ± std over them: the table gives both and ``n``, the plot the mean and the min-max
band; everything else is replicate 0's.
"""

from __future__ import annotations

from collections.abc import Callable

from hf_lottery.foundations.storage import atomic_path, write_json, write_text
from hf_lottery.training.tasks import TEST_PREFIX

from .controls import CONTROLS
from .methods import METHODS
from .paths import IMP, RunPaths, run_name
from .rows import LevelResult, collect_rows


def format_table(rows: list[LevelResult], metric: str) -> str:
    """A Markdown table: level, run, sparsity, the main metric and its difference to dense, on validation and,
    when the run has a test split, on it (``test accuracy``, ``test vs dense``); then any other scores, the
    optimizer steps each row cost in all and, when its levels counted them, the parameters each keeps of the
    model's. A run without a dense row (a fine-tuned ticket) has nothing to compare with, so it gets no "vs dense"
    columns.
    """
    dense = rows[0]
    compared = dense.is_reference
    replicated = dense.replicates is not None
    columns: list[tuple[str, Callable[[LevelResult], str]]] = [
        ("level", lambda r: str(r.level)), ("run", _run_name),
    ]  # fmt: skip
    unit = next((row.unit for row in rows if row.unit is not None), None)
    if unit is not None:
        columns.append((f"{unit}s removed", lambda r: f"{r.unit_sparsity or 0:.1%}"))
    columns.append(("sparsity", lambda r: f"{r.sparsity:.1%}"))
    main = [m for m in (metric, TEST_PREFIX + metric) if m in dense.scores]
    for m in main:
        if m == metric and replicated:
            columns.append((f"{metric} (mean ± std)", lambda r: f"{r.mean:.4f} ± {r.std:.4f}"))
            columns += [("vs dense", lambda r: f"{r.mean - dense.mean:+.4f}")] if compared else []
            columns.append(("n", lambda r: str(len(r.replicates))))
            continue
        columns.append((_column(m), lambda r, m=m: f"{r.scores[m]:.4f}"))
        if compared:
            name = "vs dense" if m == metric else "test vs dense"
            columns.append((name, lambda r, m=m: f"{r.scores[m] - dense.scores[m]:+.4f}"))
    columns += [(_column(k), lambda r, k=k: f"{r.scores[k]:.4f}") for k in dense.scores if k not in main]
    columns.append(("total steps", lambda r: "" if r.total_steps is None else str(r.total_steps)))
    if any(row.kept_parameters is not None for row in rows):  # levels of earlier versions do not count them
        columns.append(("parameters kept", _parameters_kept))
    lines = ["| " + " | ".join(name for name, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows]
    if replicated:
        lines += ["", f"{metric}: mean ± sample std over the n replicates that have the level; the other columns "
                      "are replicate 0's (the run directory's own levels, the ones exported)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _parameters_kept(row: LevelResult) -> str:
    """``18.3M of 22.7M``: the share of the whole model a level keeps, which its sparsity (of the prunable
    weights only) does not say."""
    if row.kept_parameters is None:
        return ""
    return f"{_count(row.kept_parameters)} of {_count(row.parameters)}"


def _count(n: int) -> str:
    """A parameter count as people say it: 950, 98.3k, 22.7M, 6.74B."""
    for size, suffix, digits in ((1e9, "B", 2), (1e6, "M", 1), (1e3, "k", 1)):
        if n >= size:
            return f"{n / size:.{digits}f}{suffix}"
    return str(n)


def _column(key: str) -> str:
    """A score's column name: ``test_accuracy`` is ``test accuracy``."""
    return "test " + key.removeprefix(TEST_PREFIX) if key.startswith(TEST_PREFIX) else key


def _run_name(row: LevelResult) -> str:
    if row.level == 0 and row.sparsity == 0 and row.steps == 0:  # --train-dense false
        return "pretrained, untrained head" if row.untrained_head else "pretrained"
    clipped = row.is_clipped and row.branch not in METHODS  # a method's levels all hit targets
    return run_name(row.branch, row.level, row.sparsity) + (" (clipped)" if clipped else "")


def plot(rows: list[LevelResult], metric: str, path) -> None:
    """Sparsity on x, metric on y; dense as a horizontal line, IMP and each control as a series, and IMP's test
    scores as a dash-dotted series when the run has a test split.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    dense = rows[0]
    replicated = dense.replicates is not None
    value = (lambda r: r.mean) if replicated else (lambda r: r.scores[metric])
    ax.axhline(value(dense), color="grey", linestyle="--", label=f"{_run_name(dense)} ({value(dense):.3f})")
    if replicated:
        ax.axhspan(min(dense.replicates), max(dense.replicates), color="grey", alpha=0.15)
        ax.set_title(f"mean and min–max of {len(dense.replicates)} replicates", fontsize="medium")
    styles = {IMP: ("o-", "IMP ticket (rewound)")}
    styles |= {name: (kind.style, kind.label) for name, kind in [*CONTROLS.items(), *METHODS.items()]}
    for branch, (style, label) in styles.items():
        series = [dense] + sorted((r for r in rows if r.branch == branch and r.level > 0), key=_sparsity)
        if len(series) > 1:
            x = [100 * r.sparsity for r in series]
            (line,) = ax.plot(x, [value(r) for r in series], style, label=label)
            if replicated:
                low, high = [min(r.replicates) for r in series], [max(r.replicates) for r in series]
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    test = TEST_PREFIX + metric
    imp = [dense] + sorted((r for r in rows if r.branch == IMP and r.level > 0), key=_sparsity)
    if test in dense.scores:
        label = "IMP ticket, test (held out)" + (", replicate 0" if replicated else "")
        ax.plot([100 * r.sparsity for r in imp], [r.scores[test] for r in imp], "o-.", label=label)
    ax.set_xlabel("sparsity of prunable weights (%)")
    ax.set_ylabel(metric if dense.greater_is_better else f"{metric} (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _sparsity(row: LevelResult) -> float:
    return row.sparsity


def write_results(paths: RunPaths, metric: str) -> list[LevelResult]:
    """Collect the run's rows from its levels on disk and write ``results.json``, the table and the plot."""
    rows = collect_rows(paths)
    write_json(paths.results_json, [row.to_dict() for row in rows])
    sections = [section for method in METHODS.values() if (section := method().results_section(paths))]
    write_text(paths.results_table, "\n".join([format_table(rows, metric), *sections]))
    plot(rows, metric, paths.plot)
    return rows
