"""The run's results: a table of every level (dense level 0 first) and the sparsity-vs-metric plot."""

from __future__ import annotations

from .paths import IMP, RunPaths
from .storage import atomic_path, read_json, write_json, write_text


def collect_rows(paths: RunPaths, branches: list[str], max_level: int) -> list[dict]:
    rows = [read_json(paths.level(IMP, 0).metrics)]
    for level in range(1, max_level + 1):
        rows += [read_json(paths.level(branch, level).metrics) for branch in branches]
    return rows


def format_table(rows: list[dict], metric: str) -> str:
    """A Markdown table: level, branch, sparsity, the main metric and its difference to dense."""
    dense = rows[0][metric]
    known = (metric, "steps", "sparsity", "branch", "level", "metric", "greater_is_better")
    extra = [k for k in rows[0] if k not in known]
    header = ["level", "run", "sparsity", metric, "vs dense", *extra]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            str(row["level"]),
            row["branch"] if row["level"] else ("dense" if row["sparsity"] == 0 else "fine-tuned ticket"),
            f"{row['sparsity']:.1%}",
            f"{row[metric]:.4f}",
            f"{row[metric] - dense:+.4f}",
            *(f"{row[k]:.4f}" for k in extra),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], metric: str, path) -> None:
    """Sparsity on x, metric on y; dense as a horizontal line, IMP and each control as a series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    dense = rows[0]
    ax.axhline(dense[metric], color="grey", linestyle="--", label=f"dense ({dense[metric]:.3f})")
    styles = {
        IMP: ("o-", "IMP ticket (rewound)"),
        "random-prune": ("s--", "random pruning"),
        "reinit": ("^:", "random reinit"),
    }
    for branch, (style, label) in styles.items():
        series = [dense] + [r for r in rows if r["branch"] == branch and r["level"] > 0]
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


def write_results(paths: RunPaths, branches: list[str], max_level: int, metric: str) -> list[dict]:
    rows = collect_rows(paths, branches, max_level)
    write_json(paths.results_json, rows)
    write_text(paths.results_table, format_table(rows, metric))
    plot(rows, metric, paths.plot)
    return rows
