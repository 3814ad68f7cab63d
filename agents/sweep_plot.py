"""Draw a sweep as people read one: per run a strip of episode scores with its IQM and 95% interval."""

from pathlib import Path
from typing import Any

import numpy as np
from seqrl.agents.sweep_report import group_runs, run_labels, run_scores, summarize_runs


def plot_sweep(records: list[dict[str, Any]], output: Path) -> None:
    """Write a PNG with a row per run (labelled by what differs between runs): episode scores, IQM, its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = group_runs(records)
    labels, summaries = run_labels(runs), summarize_runs(runs)
    measures = sorted({run_scores(lines)[1] for lines in runs.values()})
    figure, axis = plt.subplots(figsize=(8, 1.2 + 0.5 * len(runs)))
    jitter = np.random.default_rng(0)  # the same picture for the same log
    for row, (key, lines) in enumerate(runs.items()):
        scores = run_scores(lines)[0]
        axis.scatter(
            scores,
            row + jitter.uniform(-0.15, 0.15, len(scores)),
            s=14,
            alpha=0.6,
            color="tab:blue",
            label="episode" if row == 0 else None,
        )
        summary = summaries[key]
        if summary.iqm_low is not None:
            axis.plot(
                [summary.iqm_low, summary.iqm_high],
                [row, row],
                color="black",
                linewidth=2,
                label="IQM 95% CI" if row == 0 else None,
            )
        axis.plot(
            [summary.iqm],
            [row],
            "|",
            color="tab:red",
            markersize=18,
            markeredgewidth=2.5,
            label="IQM" if row == 0 else None,
        )
    ticks = [f"{labels[key]} (n={len(lines)})" for key, lines in runs.items()]
    axis.set_yticks(range(len(runs)), ticks, fontsize="small")
    axis.invert_yaxis()
    axis.set_xlabel(" / ".join(measures) + (" (D4RL)" if measures == ["normalized score"] else ""))
    axis.grid(axis="x", alpha=0.3)
    axis.legend(fontsize="small", loc="best")
    figure.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)
