"""Draw episode returns and normalized scores from one or more episode logs."""

from collections import defaultdict
from pathlib import Path

from seqrl import SeqrlError
from seqrl.agents.episode_log import read_log


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
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise SeqrlError("plotting needs matplotlib: pip install 'seqrl[plot]'") from None
    if Path(output).is_dir():
        raise SeqrlError(f"-o {output} is a directory; pass a file such as {Path(output) / 'returns.png'}")
    if Path(output).suffix.lower() != ".png":
        raise SeqrlError(f"-o {output} must name a .png file")
    groups = read_episodes(paths)
    records = [record for group in groups.values() for record in group]
    if any("cell" in record for record in records):  # a `seqrl evaluate` sweep: a strip per cell, not a time series
        from seqrl.agents.sweep_plot import plot_sweep

        return plot_sweep(records, output)
    has_scores = any(r.get("normalized_score") is not None for rs in groups.values() for r in rs)
    figure, axes = plt.subplots(2 if has_scores else 1, 1, figsize=(8, 6 if has_scores else 3.5), sharex=True, squeeze=False)
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
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(output, dpi=100)
    except OSError as error:
        raise SeqrlError(f"cannot write {output} ({error.strerror}); pick a writable place") from None
    finally:
        plt.close(figure)
