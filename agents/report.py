"""What a rollout shows: a live progress display while it runs, a summary table when it ends."""

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from seqrl.agents.loop import EpisodeResult, Step


class RolloutProgress:
    """Episodes done/total, steps, the current return and steps/s, redrawn at most 10 times a second."""

    def __init__(self, total: int, done: int, console: Console, disable: bool = False):
        columns = (
            TextColumn("episodes"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
        )
        self.progress = Progress(*columns, console=console, transient=True, disable=disable)
        self.task = self.progress.add_task("rollout", total=total, completed=done, status="")
        self.steps = 0
        self.start = time.perf_counter()
        self.next_redraw = 0.0
        self.latest = ""  # the running episode and its return, as of the last step

    def __enter__(self) -> "RolloutProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._show_status()  # the last drawing shows the final counts, not a status up to 0.1 s old
        self.progress.stop()

    def on_step(self, step: Step) -> None:
        """Count the step; refresh the status text when 0.1 s have passed."""
        self.steps += len(step.episodes)
        self.latest = f"episode {step.episodes[0]} return {step.returns[0]:.1f}"
        if time.perf_counter() >= self.next_redraw:
            self._show_status()

    def _show_status(self) -> None:
        now = time.perf_counter()
        self.next_redraw = now + 0.1
        rate = self.steps / max(now - self.start, 1e-9)
        status = f"steps {self.steps:,}  {self.latest}  {rate:,.0f} steps/s"
        self.progress.update(self.task, status=status, refresh=True)

    def episode_done(self) -> None:
        """Advance the bar by one finished episode."""
        self.progress.advance(self.task)


EDGE_ROWS = 15  # a summary of more than 2 * EDGE_ROWS episodes shows the first and last EDGE_ROWS of them


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def summary_table(results: list[EpisodeResult], title: str) -> Table:
    """A row per episode (first and last ones of long runs), then mean, sample std, min and max of each column."""
    references = sorted({r.reference or "d4rl" for r in results if r.normalized_score is not None})
    caption = f"score: normalized return (reference returns: {', '.join(references) or 'none'})"
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("episode", "seed", "return", "length", "score", "end", "time s"):
        table.add_column(name, justify="left" if name == "end" else "right", no_wrap=True)
    ordered = sorted(results, key=lambda result: result.episode)
    for i, r in enumerate(ordered):
        if len(ordered) > 2 * EDGE_ROWS and EDGE_ROWS <= i < len(ordered) - EDGE_ROWS:
            if i == EDGE_ROWS:
                table.add_row("...", "", f"{len(ordered) - 2 * EDGE_ROWS} more", "", "", "", "")
            continue
        end = "terminated" if r.terminated else "truncated"
        table.add_row(
            str(r.episode),
            str(r.seed),
            _number(r.episode_return),
            str(r.length),
            _number(r.normalized_score),
            end,
            _number(r.wall_time_s, 2),
        )
    if not results:
        return table
    returns = np.array([r.episode_return for r in results])
    lengths = np.array([r.length for r in results])
    scores = (
        None if any(r.normalized_score is None for r in results) else np.array([r.normalized_score for r in results])
    )
    table.add_section()
    for name, stat in (("mean", np.mean), ("sample std", _sample_std), ("min", np.min), ("max", np.max)):
        cells = [_stat(values, stat) for values in (returns, lengths, scores)]
        table.add_row(name, "", *cells, "", "")
    return table


def _sample_std(values: np.ndarray) -> float:
    """Standard deviation with Bessel's correction (n - 1); NaN (shown "-") for a single episode."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def _stat(values: np.ndarray | None, stat: Callable[[np.ndarray], Any]) -> str:
    """`stat` of `values` as a table cell ("-" where there are no values)."""
    if values is None:
        return "-"
    if values.dtype.kind == "i" and stat in (np.min, np.max):
        return str(stat(values))
    value = float(stat(values))
    return "-" if np.isnan(value) else _number(value)
