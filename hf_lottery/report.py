"""The run's results: a table of every level (dense level 0 first) and the sparsity-vs-metric plot."""

from __future__ import annotations

from .controls import CONTROLS
from .paths import IMP, RunPaths
from .storage import atomic_path, read_json, write_json, write_text


def collect_rows(paths: RunPaths) -> list[dict]:
    """Every finished level on disk, dense first: those of earlier invocations and controls added later too."""
    return [{**read_json(level.metrics), "path": level.name} for level in paths.finished_levels()]


def format_table(rows: list[dict], metric: str) -> str:
    """A Markdown table: level, branch, sparsity, the main metric and its difference to dense."""
    dense = rows[0][metric]
    known = (metric, "steps", "resumed_from_step", "sparsity", "branch", "level", "metric", "greater_is_better",
             "path", "command")  # fmt: skip
    extra = [k for k in rows[0] if k not in known]
    header = ["level", "run", "sparsity", metric, "vs dense", *extra]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            str(row["level"]),
            _run_name(row),
            f"{row['sparsity']:.1%}",
            f"{row[metric]:.4f}",
            f"{row[metric] - dense:+.4f}",
            *(f"{row[k]:.4f}" for k in extra),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _run_name(row: dict) -> str:
    if not row["level"]:
        return "dense" if row["sparsity"] == 0 else "fine-tuned ticket"
    return row["branch"] + (" (clipped)" if "_to_" in row.get("path", "") else "")


def plot(rows: list[dict], metric: str, path) -> None:
    """Sparsity on x, metric on y; dense as a horizontal line, IMP and each control as a series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    dense = rows[0]
    ax.axhline(dense[metric], color="grey", linestyle="--", label=f"dense ({dense[metric]:.3f})")
    styles = {IMP: ("o-", "IMP ticket (rewound)"), **{name: (c.style, c.label) for name, c in CONTROLS.items()}}
    for branch, (style, label) in styles.items():
        series = [dense] + sorted((r for r in rows if r["branch"] == branch and r["level"] > 0), key=_sparsity)
        if len(series) > 1:
            ax.plot([100 * r["sparsity"] for r in series], [r[metric] for r in series], style, label=label)
    ax.set_xlabel("sparsity of prunable weights (%)")
    lower = rows[0].get("greater_is_better") is False
    ax.set_ylabel(f"{metric} (lower is better)" if lower else metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _sparsity(row: dict) -> float:
    return row["sparsity"]


def write_results(paths: RunPaths, metric: str) -> list[dict]:
    rows = collect_rows(paths)
    write_json(paths.results_json, rows)
    write_text(paths.results_table, format_table(rows, metric))
    plot(rows, metric, paths.plot)
    return rows
