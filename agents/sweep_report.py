"""What a sweep shows: its runs grouped from log lines, labelled by what differs, a live progress line and a table."""

import json
import time
from collections import Counter, defaultdict
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from seqrl.agents.stats import ScoreSummary, summarize_scores

# config entries that follow from the checkpoint (or only say where it ran): not a setting to label cells by
BOOKKEEPING = ("seqrl_version", "agent", "checkpoint", "checkpoint_digest", "discretizer", "state_statistics", "device")


def run_key(record: dict[str, Any]) -> str:
    """What must match for two log lines to be episodes of one run: env, agent, seed base, config and cell."""
    config = {key: value for key, value in (record.get("config") or {}).items() if key != "seqrl_version"}
    seed_base = record.get("seed", 0) - record.get("episode", 0)
    parts = [record.get("env_id"), record.get("agent"), seed_base, config, record.get("cell")]
    return json.dumps(parts, sort_keys=True)


def run_description(record: dict[str, Any]) -> dict[str, Any]:
    """The env, checkpoint, seed base and effective settings of a log line's run."""
    config = record.get("config") or {}
    settings = {key: value for key, value in config.items() if key not in BOOKKEEPING}
    seed_base = record.get("seed", 0) - record.get("episode", 0)
    return {"env": record.get("env_id"), "checkpoint": record.get("agent"), "seed": seed_base, **settings}


def group_runs(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Log lines grouped by run (never merging runs that differ in any setting), each in seed order."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        runs[run_key(record)].append(record)
    return {key: sorted(lines, key=lambda line: line["seed"]) for key, lines in runs.items()}


def run_labels(runs: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """A label per run naming only what differs between the runs (the checkpoint when only one run)."""
    descriptions = {key: run_description(lines[0]) for key, lines in runs.items()}
    names = list(dict.fromkeys(name for description in descriptions.values() for name in description))
    # a setting differs where the runs that have it (agents of its kind) hold more than one value of it
    differing = [
        name
        for name in names
        if len({json.dumps(d[name]) for d in descriptions.values() if d.get(name) is not None}) > 1
    ]
    labels = {}
    for key, description in descriptions.items():
        parts = [
            f"{name}={_format(description[name])}"
            for name in differing
            if name != "checkpoint" and description.get(name) is not None
        ]
        if "checkpoint" in differing or not parts:
            parts.insert(0, str(description["checkpoint"]))
        labels[key] = ", ".join(parts)
    counts = Counter(labels.values())  # runs alike in everything described (other weights or cell, same name)
    seen: Counter[str] = Counter()
    for key, label in list(labels.items()):
        seen[label] += 1
        if counts[label] > 1:
            labels[key] = f"{label} #{seen[label]}"
    return labels


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_scores(lines: list[dict[str, Any]]) -> tuple[list[float], str]:
    """A run's scores in seed order: normalized scores where the env has them, else returns; and which."""
    if all(line.get("normalized_score") is not None for line in lines):
        return [line["normalized_score"] for line in lines], "normalized score"
    return [line["return"] for line in lines], "return"


def summarize_runs(runs: dict[str, list[dict[str, Any]]]) -> dict[str, ScoreSummary]:
    """The score summary of each run."""
    return {
        key: summarize_scores(run_scores(lines)[0], [line["length"] for line in lines]) for key, lines in runs.items()
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def sweep_table(records: list[dict[str, Any]], title: str) -> Table:
    """One row per run: episodes, mean ± std, IQM [95% CI], worst five-seed mean, mean length."""
    runs = group_runs(records)
    labels, summaries = run_labels(runs), summarize_runs(runs)
    measures = {run_scores(lines)[1] for lines in runs.values()}
    caption = (
        f"{' / '.join(sorted(measures))}; IQM: interquartile mean, 95% percentile-bootstrap interval "
        f"({2000} resamples); worst 5: lowest mean over 5 consecutive seeds"
    )
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("cell", overflow="fold")
    for name in ("episodes", "mean ± std", "IQM [95% CI]", "worst 5", "length"):
        table.add_column(name, justify="right", no_wrap=True)
    for key in runs:
        s = summaries[key]
        interval = "" if s.iqm_low is None else f" [{s.iqm_low:.1f}, {s.iqm_high:.1f}]"
        table.add_row(
            labels[key],
            str(s.episodes),
            f"{s.mean:.1f} ± {s.std:.1f}",
            f"{s.iqm:.1f}{interval}",
            _cell(s.worst_window_mean),
            f"{s.mean_length:.0f}",
        )
    return table


class SweepProgress:
    """Cells and episodes done, env steps/s of the finished episodes and workers alive, redrawn 4 times a second."""

    def __init__(self, cells: int, episodes: int, console: Console, disable: bool = False):
        self.progress = Progress(
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=disable,
            refresh_per_second=4,
        )
        self.task = self.progress.add_task("sweep", status="")
        self.cells, self.episodes = cells, episodes
        self.start = time.perf_counter()
        self.steps = 0

    def __enter__(self) -> "SweepProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def update(self, cells_done: int, episodes_done: int, new_steps: int, workers_alive: int) -> None:
        """Show the counts; `new_steps` are the env steps of episodes finished since the last call."""
        self.steps += new_steps
        rate = self.steps / max(time.perf_counter() - self.start, 1e-9)
        status = (
            f"cells {cells_done}/{self.cells}  episodes {episodes_done}/{self.episodes}  "
            f"{rate:,.0f} steps/s  workers alive {workers_alive}"
        )
        self.progress.update(self.task, status=status)
