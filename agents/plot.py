"""Draw episode returns and normalized scores from one or more episode logs."""

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from seqrl import SeqrlError
from seqrl.agents.episode_log import read_log


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or a one-line error naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SeqrlError("plotting needs matplotlib: pip install 'seqrl[plot]'") from None
    return plt


def check_output(output: Path) -> None:
    """Refuse an output path that is a directory or not a .png file."""
    if Path(output).is_dir():
        raise SeqrlError(f"-o {output} is a directory; pass a file such as {Path(output) / 'returns.png'}")
    if Path(output).suffix.lower() != ".png":
        raise SeqrlError(f"-o {output} must name a .png file")


def save_png(plt: Any, figure: Any, output: Path) -> None:
    """Write `figure` to `output` and close it; a failed write is a one-line error."""
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(output, dpi=100)
    except OSError as error:
        raise SeqrlError(f"cannot write {output} ({error.strerror}); pick a writable place") from None
    finally:
        plt.close(figure)


def read_episodes(paths: list[Path]) -> dict[str, list[dict]]:
    """Episode records of the logs, grouped by '<agent> on <env>'; a torn last line is skipped."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        for record in read_log(path).records:
            groups[f"{record.get('agent', '?')} on {record.get('env_id', '?')}"].append(record)
    if not groups:
        raise SeqrlError("the logs hold no finished episode; nothing to plot")
    return groups


def plot_logs(paths: list[Path], output: Path) -> None:
    """Write a PNG with episode returns (top) and normalized scores (bottom) per agent."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    check_output(output)
    groups = read_episodes(paths)
    records = [record for group in groups.values() for record in group]
    if any("cell" in record for record in records):  # a `seqrl evaluate` sweep: a strip per cell, not a time series
        from seqrl.agents.sweep_plot import plot_sweep

        return plot_sweep(records, output)
    has_scores = any(r.get("normalized_score") is not None for rs in groups.values() for r in rs)
    figure, axes = plt.subplots(
        2 if has_scores else 1, 1, figsize=(8, 6 if has_scores else 3.5), sharex=True, squeeze=False
    )
    for label, records in sorted(groups.items()):
        records = sorted(records, key=lambda r: r["episode"])
        episodes = [r["episode"] for r in records]
        axes[0, 0].plot(episodes, [r["return"] for r in records], "o-", label=label)
        if has_scores:
            axes[1, 0].plot(episodes, [r.get("normalized_score") for r in records], "o-", label=label)
    axes[0, 0].set_ylabel("episode return")
    axes[0, 0].legend(fontsize="small")
    if has_scores:
        axes[1, 0].set_ylabel("normalized score (D4RL)")
    axes[-1, 0].set_xlabel("episode")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in axes[:, 0]:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    save_png(plt, figure, output)


NOT_CURVES = {"step", "tokens", "lr", "elapsed"}  # metrics.jsonl keys that are counters, not learning curves
EVAL_LABEL = "eval score (normalized)"


def read_metrics(path: Path) -> list[dict]:
    """The records of a training run's metrics.jsonl, or a one-line error."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise SeqrlError(f"cannot read {path} ({error.strerror}); pass a training run's metrics.jsonl") from None
    try:
        records = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as error:
        raise SeqrlError(f"{path} has a line that is not JSON ({error.msg}); pass a run's metrics.jsonl") from None
    if not records or not all(isinstance(record, dict) and "step" in record for record in records):
        raise SeqrlError(f"{path} holds no training metrics (records with a 'step'); pass a run's metrics.jsonl")
    return records


def plot_metrics(path: Path, output: Path) -> None:
    """Write a PNG of a training run's learning curves: every numeric metric against the update step."""
    plt = _pyplot()
    check_output(output)
    records = read_metrics(path)
    names = sorted(
        {
            key
            for record in records
            for key, value in record.items()
            if key not in NOT_CURVES and isinstance(value, (int, float)) and not isinstance(value, bool)
        }
    )
    if not names:
        raise SeqrlError(f"{path} records no losses or scores to plot")
    losses = [name for name in names if "loss" in name]
    scores = [name for name in names if name == "eval_score"]  # --eval-episodes: mean normalized score
    others = [name for name in names if "loss" not in name and name != "eval_score"]  # returns: another scale
    panels = [(group, label) for group, label in ((losses, "loss"), (scores, EVAL_LABEL), (others, "value")) if group]
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 3.5 * len(panels)), sharex=True, squeeze=False)
    for axis, (group, label) in zip(axes[:, 0], panels):
        for name in group:
            points = [(record["step"], record[name]) for record in records if record.get(name) is not None]
            axis.plot(*zip(*points), "o-" if len(points) < 30 else "-", label=name.replace("_", " "))
        if group is scores:  # each episode's score beside their mean
            episodes = [
                (r["step"], score) for r in records if r.get("eval_score") is not None for score in r["eval_scores"]
            ]
            axis.plot(*zip(*episodes), ".", color="gray", alpha=0.5, label="eval episodes")
        axis.set_ylabel(label)
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("update step")
    axes[0, 0].set_title(f"learning curves: {Path(path).parent.name or Path(path).name}")
    figure.tight_layout()
    save_png(plt, figure, output)
