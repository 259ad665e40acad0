"""The run's results: a table of every level (dense level 0 first) and the sparsity-vs-metric plot.

With a test split, both show each level's held-out score beside its validation score: levels are chosen on
validation, so only the test score is free of that choice. With replicates (``hf_lottery/replicates.py``), the
metric is each level's mean ± std over them: the table gives both and ``n``, the plot the mean and the min-max
band; everything else is replicate 0's.
"""

from __future__ import annotations

from .controls import CONTROLS
from .methods import METHODS
from .paths import IMP, RunPaths
from .rows import LevelResult, collect_rows
from .storage import atomic_path, write_json, write_text
from .tasks import TEST_PREFIX


def format_table(rows: list[LevelResult], metric: str) -> str:
    """A Markdown table: level, branch, sparsity, the main metric and its difference to dense, on validation and,
    when the run has a test split, on it (``test accuracy``, ``test vs dense``); then any other scores, and the
    optimizer steps each row cost in all.
    """
    dense = rows[0]
    main = [m for m in (metric, TEST_PREFIX + metric) if m in dense.scores]
    extra = [k for k in dense.scores if k not in main]
    replicated = dense.replicates is not None
    compared = [(_column(m), "vs dense" if m == metric else "test vs dense") for m in main]
    if replicated:
        compared[0] = (f"{metric} (mean ± std)", "vs dense", "n")
    unit = next((row.unit for row in rows if row.unit is not None), None)
    header = ["level", "run", *([f"{unit}s removed"] if unit else []), "sparsity"]
    header += [*(name for group in compared for name in group), *map(_column, extra)]
    header.append("total steps")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            str(row.level),
            _run_name(row),
            *([f"{row.unit_sparsity or 0:.1%}"] if unit else []),
            f"{row.sparsity:.1%}",
        ]
        for m in main:
            if m == metric and replicated:
                cells += [f"{row.mean:.4f} ± {row.std:.4f}", f"{row.mean - dense.mean:+.4f}", str(len(row.replicates))]
            else:
                cells += [f"{row.scores[m]:.4f}", f"{row.scores[m] - dense.scores[m]:+.4f}"]
        cells += [*(f"{row.scores[k]:.4f}" for k in extra), "" if row.total_steps is None else str(row.total_steps)]
        lines.append("| " + " | ".join(cells) + " |")
    if replicated:
        lines += ["", f"{metric}: mean ± sample std over the n replicates that have the level; the other columns "
                      "are replicate 0's (the run directory's own levels, the ones exported)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _column(key: str) -> str:
    """A score's column name: ``test_accuracy`` is ``test accuracy``."""
    return "test " + key.removeprefix(TEST_PREFIX) if key.startswith(TEST_PREFIX) else key


def _run_name(row: LevelResult) -> str:
    if not row.level:
        return "dense" if row.sparsity == 0 else "fine-tuned ticket"
    clipped = row.is_clipped and row.branch not in METHODS  # a method's levels all hit targets
    return row.branch + (" (clipped)" if clipped else "")


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
    ax.axhline(value(dense), color="grey", linestyle="--", label=f"dense ({value(dense):.3f})")
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
