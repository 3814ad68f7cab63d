"""`seqrl evaluate`: a grid of agents x settings x episodes on one env, run by local processes or a Ray cluster.

The driver checks every cell (loading each agent once) before any episode runs, hands workers jobs of
up to `num_envs` episodes of one cell, logs each episode as its result arrives and puts the unfinished
episodes of a worker that died back in the queue, so every episode is logged exactly once.
Episode i of every cell runs with seed `seed + i`, as in `seqrl rollout`.
"""

import glob
import re
import signal
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from seqrl import SeqrlError, __version__
from seqrl.agents.bundled import bundled_checkpoint, bundled_methods
from seqrl.agents.episode_log import EpisodeLog, episode_record
from seqrl.agents.options import MAX_SEED, NONE_WORD, Options, check_seed_range, option
from seqrl.agents.rollout import MAX_EPISODES
from seqrl.agents.sweep_report import SweepProgress, run_key, sweep_table
from seqrl.planners.workers import (
    Event,
    Job,
    LocalPool,
    RayPool,
    WorkerSetup,
    import_ray,
)

BUILT_IN_AGENTS = ("dt", "tt", "random")  # dt and tt: the env's bundled checkpoints
POLL_SECONDS = 0.25


@dataclass(frozen=True, kw_only=True)
class SweepSpec(Options):
    """Everything a sweep runs: agents x settings grid x episodes on one env, and where it runs."""

    env: str = option(help="Gymnasium MuJoCo env id, e.g. Hopper-v5.")
    agents: list[str] = option([], "checkpoint directories, hub ids, bundled:NAME, or dt / tt / random", cli=False)
    grid: dict = option({}, "each setting's values (from --set): the cells are their product", cli=False)
    episodes: int = option(10, "Episodes per cell; episode i uses seed SEED + i.", low=1, high=MAX_EPISODES)
    seed: int = option(0, "Seed of episode 0 of every cell.", low=0, high=MAX_SEED)
    max_steps: int | None = option(None, "Cap on steps per episode (default: the env's own limit).", low=1)
    num_envs: int = option(1, "Envs each worker steps together (one batched agent call per step).", low=1, high=1024)
    workers: int | None = option(
        None,
        "Worker processes (default 1; with --ray auto or ADDRESS: the cluster's CPUs / --threads).",
        low=1,
        high=4096,
    )
    ray: str | None = option(
        None, "Run on Ray (needs seqrl[ray]): local (a local cluster of --workers CPUs), auto or a cluster ADDRESS."
    )
    threads: int = option(1, "CPU threads for torch in each worker.", low=1, high=1024)
    log: Path | None = option(None, "Append one JSON line per finished episode (rollout's fields plus its cell).")
    resume: bool = option(False, "Skip the episodes --log already holds for this sweep.")
    quiet: bool = option(False, "Print nothing but errors.")

    def check(self) -> None:
        """A resume needs a log, a sweep an agent, and the seeds must stay in range."""
        if self.resume and self.log is None:
            raise SeqrlError("--resume continues a log; add --log FILE")
        if not self.agents:
            raise SeqrlError("no agent to evaluate; pass --checkpoint DIR or --agent dt|tt|random")
        check_seed_range(self.seed, self.episodes)


@dataclass(frozen=True)
class Cell:
    """One grid cell: an agent with one combination of settings, and the config its log lines carry."""

    index: int
    name: str  # the agent as logs name it: the --checkpoint value, bundled:NAME or random
    checkpoint: Path | None  # None: the random agent
    settings: dict[str, Any]
    config: dict[str, Any]  # the agent's effective settings, max_steps and seqrl version, as `seqrl rollout` logs them

    def describe(self) -> dict[str, Any]:
        """The log's `cell` field: checkpoint and grid settings."""
        return {"checkpoint": self.name, "settings": self.settings}


def parse_value(text: str) -> Any:
    """A --set value as JSON would read it: integer, float, true/false, none (option off), else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == NONE_WORD:
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip()


def parse_grid(options: list[str]) -> dict[str, list[Any]]:
    """The grid of `--set NAME=V1,V2,...` options (NAME may use dashes); an error for a malformed or repeated one."""
    grid: dict[str, list[Any]] = {}
    for given in options:
        name, separator, values = given.partition("=")
        name = name.strip().replace("-", "_")
        parsed = [parse_value(value) for value in values.split(",") if value.strip()]
        if not separator or not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or not parsed:
            raise SeqrlError(f"--set {given!r}: write NAME=V1,V2,... such as --set target_return=1800,3600")
        if name in grid:
            raise SeqrlError(f"--set {name} given twice; list all its values in one: --set {name}=V1,V2")
        grid[name] = parsed
    return grid


def _natural_key(text: str) -> list[Any]:
    """Sort key that orders step-500 before step-1000."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def expand_checkpoints(values: list[str]) -> list[str]:
    """--checkpoint values with glob patterns (quoted, e.g. 'runs/x/checkpoints/*') expanded in natural order."""
    expanded = []
    for value in values:
        if not glob.has_magic(value):
            expanded.append(value)
            continue
        matches = sorted((path for path in glob.glob(value) if Path(path).is_dir()), key=_natural_key)
        if not matches:
            raise SeqrlError(f"--checkpoint {value} matches no directory; check the pattern")
        expanded.extend(matches)
    return expanded


def _resolve_agent(env_id: str, agent: str) -> tuple[str, Path | None]:
    """An agent's log name and checkpoint directory (None: random): dt / tt / random, bundled:NAME or a checkpoint."""
    from seqrl.planners.checkpoint import resolve_checkpoint

    if agent == "random":
        return "random", None
    if agent in ("dt", "tt"):
        directory = bundled_checkpoint(env_id, agent)
        if directory is None:
            shipped = ", ".join(bundled_methods(env_id)) or "none"
            raise SeqrlError(f"no bundled {agent} agent for {env_id} (bundled: {shipped}); pass --checkpoint DIR")
        return f"bundled:{directory.name}", directory
    return agent, resolve_checkpoint(agent)


def grid_cells(spec: SweepSpec) -> list[Cell]:
    """The sweep's cells, agent-major, each agent loaded once with its settings (an error names a bad one)."""
    import itertools

    from seqrl.agents.random import RandomAgent
    from seqrl.envs.make import make_env
    from seqrl.planners import load_agent

    names = list(spec.grid)
    combinations = [dict(zip(names, values)) for values in itertools.product(*spec.grid.values())]
    env = make_env(spec.env)
    cells = []
    try:
        # one cell per agent, however it was named (--agent dt is --checkpoint bundled:hopper-dt)
        resolved = dict(_resolve_agent(spec.env, agent) for agent in spec.agents)
        for name, directory in resolved.items():
            for settings in combinations:
                if directory is None and settings:
                    raise SeqrlError(
                        f"--set {', '.join(settings)}: the random agent takes no settings; "
                        "drop --set or the random agent"
                    )
                try:
                    if directory is None:
                        loaded = RandomAgent(env.action_space)
                    else:
                        loaded = load_agent(directory, env, **settings)
                except SeqrlError as error:
                    raise SeqrlError(f"{name} with --set {settings}: {error}") from None
                config = {**loaded.settings(), "max_steps": spec.max_steps, "seqrl_version": __version__}
                cells.append(Cell(len(cells), name, directory, settings, config))
    finally:
        env.close()
    return cells


def _as_cell_line(cell: Cell, record: dict[str, Any]) -> dict[str, Any]:
    """A log line seen as a line of `cell` (a line without `cell`, from `seqrl rollout`, counts as any cell's)."""
    return {**record, "cell": record.get("cell", cell.describe())}


def logged_episodes(spec: SweepSpec, cells: list[Cell], records: list[dict[str, Any]]) -> dict[int, dict[int, dict]]:
    """The log lines of each cell's episodes already in the log, by cell and episode."""
    done: dict[int, dict[int, dict]] = {cell.index: {} for cell in cells}
    keys = {}
    for cell in cells:
        probe = {
            "env_id": spec.env,
            "agent": cell.name,
            "seed": spec.seed,
            "episode": 0,
            "config": cell.config,
            "cell": cell.describe(),
        }
        keys[run_key(probe)] = cell
    for record in records:
        if not isinstance(record.get("episode"), int) or not 0 <= record["episode"] < spec.episodes:
            continue
        for cell in cells:
            if keys.get(run_key(_as_cell_line(cell, record))) is cell:
                done[cell.index].setdefault(record["episode"], record)
    return done


class _Stop:
    """SIGINT and SIGTERM set a flag that the driver's loop checks between events."""

    def __init__(self):
        self.signum: int | None = None
        self.previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum

    def take_back(self) -> None:
        """Handle the signals again, after a library (Ray's driver) installed its own handlers."""
        for signum in self.previous:
            signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Put back the handlers that were there before."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def run_sweep(spec: SweepSpec) -> int:
    """Run the sweep, log and summarise it; returns the exit status (0, or 128 + signal when interrupted)."""
    if spec.ray is not None:
        import_ray()
    console = Console(quiet=spec.quiet, highlight=False)
    cells = grid_cells(spec)
    episode_log = EpisodeLog(spec.log) if spec.log is not None else None
    done = logged_episodes(spec, cells, episode_log.records if episode_log else [])
    already = sum(len(episodes) for episodes in done.values())
    if already and not spec.resume:
        episode_log.close()
        raise SeqrlError(
            f"{spec.log} already holds {already} episodes of this sweep; add --resume to finish it, "
            "or log to a new file"
        )
    if episode_log is not None and episode_log.records and spec.resume and not already:
        episode_log.close()
        raise SeqrlError(
            f"cannot resume: {spec.log} holds no episode of this sweep (other env, checkpoints, settings "
            "or seed); rerun with the same options, or log to a new file"
        )
    total = len(cells) * spec.episodes
    if already:
        console.print(f"resuming: {already} of {total} episodes are already in {spec.log}")
    jobs = deque(
        Job(cell.index, cell.checkpoint, cell.settings, tuple(chunk[i : i + spec.num_envs]))
        for cell in cells
        for chunk in [[episode for episode in range(spec.episodes) if episode not in done[cell.index]]]
        for i in range(0, len(chunk), spec.num_envs)
    )
    where = "local processes" if spec.ray is None else f"Ray cluster {spec.ray}"
    console.print(f"{len(cells)} cells x {spec.episodes} episodes on {spec.env}: {len(jobs)} jobs on {where}")
    stop = _Stop()
    pool = None
    try:
        if jobs:
            setup = WorkerSetup(spec.env, spec.num_envs, spec.max_steps, spec.seed, spec.threads)
            pool = LocalPool(setup, spec.workers or 1) if spec.ray is None else RayPool(setup, spec.ray, spec.workers)
            stop.take_back()
            _drive(pool, jobs, cells, done, spec, episode_log, stop, total)
    except KeyboardInterrupt:
        stop.signum = stop.signum or signal.SIGINT
    finally:
        stop.restore()
        if pool is not None:
            pool.close()
        if episode_log is not None:
            episode_log.close()
    status = 128 + stop.signum if stop.signum else 0
    lines = [done[cell.index][episode] for cell in cells for episode in sorted(done[cell.index])]
    _report(console, spec, lines, total, status)
    return status


def _drive(
    pool: LocalPool | RayPool,
    jobs: deque[Job],
    cells: list[Cell],
    done: dict[int, dict[int, dict]],
    spec: SweepSpec,
    episode_log: EpisodeLog | None,
    stop: _Stop,
    total: int,
) -> None:
    """Hand out jobs and log results until every episode is logged, a worker fails, or a signal arrives."""
    running: dict[int, tuple[Job, set[int]]] = {}  # worker -> its job and the episodes not yet logged
    deaths, most_deaths = 0, max(3, 2 * pool.size)  # a worker that dies again and again is not bad luck
    progress = SweepProgress(len(cells), total, Console(stderr=True), disable=spec.quiet)
    with progress:
        while (jobs or running) and stop.signum is None:
            for worker in pool.idle():
                if jobs:
                    job = jobs.popleft()
                    pool.submit(worker, job)
                    running[worker] = (job, set(job.episodes))
            new_steps = 0
            for event in pool.events(POLL_SECONDS):
                new_steps += _handle(event, jobs, running, cells, done, spec, episode_log)
                if event.kind == "died":
                    progress.progress.console.print(
                        f"a worker died; its unfinished episodes run again ({len(jobs)} jobs queued)"
                    )
                    deaths += 1
                    if deaths > most_deaths:
                        raise SeqrlError(
                            f"workers died {deaths} times; check memory and the workers' logs, then --resume"
                        )
                    if jobs or running:
                        pool.start()
            cells_done = sum(len(episodes) == spec.episodes for episodes in done.values())
            progress.update(cells_done, sum(map(len, done.values())), new_steps, pool.alive())


def _handle(
    event: Event,
    jobs: deque[Job],
    running: dict[int, tuple[Job, set[int]]],
    cells: list[Cell],
    done: dict[int, dict[int, dict]],
    spec: SweepSpec,
    episode_log: EpisodeLog | None,
) -> int:
    """Act on one pool event; returns the env steps of the episode it logged (0 for other events)."""
    if event.kind == "error":
        raise SeqrlError(f"a worker failed: {event.message}")
    job, remaining = running[event.worker]
    if event.kind == "done":
        del running[event.worker]
        return 0
    if event.kind == "died":  # its unfinished episodes run again, first in line, with the same seeds
        del running[event.worker]
        if remaining:
            jobs.appendleft(Job(job.cell, job.checkpoint, job.settings, tuple(sorted(remaining))))
        return 0
    result, cell = event.result, cells[job.cell]
    remaining.discard(result.episode)
    if result.episode in done[cell.index]:
        return 0
    line = episode_record(spec.env, cell.name, result, cell.config) | {"cell": cell.describe()}
    if episode_log is not None:
        episode_log.append(line)
    done[cell.index][result.episode] = line
    return result.length


def _report(console: Console, spec: SweepSpec, lines: list[dict[str, Any]], total: int, status: int) -> None:
    if lines:
        console.print(sweep_table(lines, f"{spec.env}: {len(lines)} of {total} episodes"))
    if spec.log is not None and lines:
        console.print(f"log: {spec.log}")
    if status:
        kept = f"kept in {spec.log}; continue with --resume" if spec.log is not None else "not logged (add --log FILE)"
        name = signal.Signals(status - 128).name
        console.print(f"interrupted by {name}: {len(lines)} of {total} episodes finished, {kept}")
