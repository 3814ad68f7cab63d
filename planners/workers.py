"""Sweep workers: processes that hold an env batch and a loaded agent and run the episodes they are given.

Two pools drive them with the same interface: `LocalPool` (processes on this machine, no Ray) and
`RayPool` (Ray actors on a local or remote cluster; checkpoints travel through Ray's object store).
A pool reports each finished episode as it ends, and a worker that dies as a `died` event.
"""

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from seqrl import SeqrlError
from seqrl.agents.base import Agent
from seqrl.agents.loop import EpisodeResult, run_episodes


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker of a sweep shares: the env, its batch size, the episode cap, the seed base, torch threads."""

    env_id: str
    num_envs: int
    max_steps: int | None
    seed: int
    threads: int


@dataclass(frozen=True)
class Job:
    """Episodes of one grid cell for one worker to run together."""

    cell: int
    checkpoint: Path | None  # a checkpoint directory on a shared file system (None: random agent, or `packed`)
    settings: dict[str, Any]
    episodes: tuple[int, ...]
    packed: Any = None  # Ray object ref of the checkpoint's files, for workers that do not share a file system


@dataclass(frozen=True)
class Event:
    """What a pool reports: a finished episode (`result`), a job done, a worker's error or its death."""

    worker: int
    kind: str  # "result", "done", "error" or "died"
    result: EpisodeResult | None = None
    message: str = ""


def pack_checkpoint(directory: Path) -> dict[str, bytes]:
    """The files of a checkpoint directory (not its subdirectories, such as checkpoint history), by name."""
    return {path.name: path.read_bytes() for path in sorted(Path(directory).iterdir()) if path.is_file()}


class EpisodeWorker:
    """Runs jobs in one process: one env (or vector env), and the agent of the last cell kept loaded."""

    def __init__(self, setup: WorkerSetup):
        import torch
        from seqrl.envs.make import make_env, make_vector_env

        torch.set_num_threads(setup.threads)
        self.setup = setup
        self.env = make_env(setup.env_id) if setup.num_envs == 1 else make_vector_env(setup.env_id, setup.num_envs)
        self.single_env = self.env if setup.num_envs == 1 else self.env.envs[0]
        self.cell: int | None = None
        self.agent: Agent | None = None
        self.unpacked: Path | None = None  # this worker's copy of a checkpoint that came through Ray

    def run(self, job: Job) -> Iterator[EpisodeResult]:
        """Run the job's episodes, yielding each result as its episode ends."""
        if job.cell != self.cell:
            self.agent, self.cell = self._load(job), job.cell
        yield from run_episodes(self.agent, self.env, job.episodes, self.setup.seed, self.setup.max_steps)

    def _load(self, job: Job) -> Agent:
        """The agent of the job's cell, loaded from its checkpoint (unpacked here if it came through Ray)."""
        if job.checkpoint is None and job.packed is None:
            from seqrl.agents.random import RandomAgent

            return RandomAgent(self.single_env.action_space)
        from seqrl.planners import load_agent

        directory = job.checkpoint
        if job.packed is not None:
            import ray

            if self.unpacked is not None:
                shutil.rmtree(self.unpacked, ignore_errors=True)
            self.unpacked = Path(tempfile.mkdtemp(prefix="seqrl-checkpoint-"))
            for name, data in ray.get(job.packed).items():
                (self.unpacked / name).write_bytes(data)
            directory = self.unpacked
        return load_agent(directory, self.single_env, **job.settings)

    def close(self) -> None:
        """Close the env and remove the unpacked checkpoint."""
        self.env.close()
        if self.unpacked is not None:
            shutil.rmtree(self.unpacked, ignore_errors=True)


def _failure(error: BaseException) -> str:
    """One line for a worker's error: a SeqrlError's message, else the exception and where it was raised."""
    if isinstance(error, SeqrlError):
        return str(error)
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _serve(connection: Connection, setup: WorkerSetup) -> None:
    """A local worker process: run each job received, sending back every result, then done (None ends it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the driver stops us
    try:
        worker = EpisodeWorker(setup)
        while (job := connection.recv()) is not None:
            for result in worker.run(job):
                connection.send(("result", result))
            connection.send(("done", None))
        worker.close()
    except (EOFError, BrokenPipeError):  # the driver went away
        pass
    except Exception as error:  # noqa: BLE001 -- reported to the driver, which stops the sweep with it
        connection.send(("error", _failure(error)))


@dataclass
class _Process:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    busy: bool = False


@dataclass
class LocalPool:
    """N worker processes on this machine, each with its own pipe; a killed process is seen at once."""

    setup: WorkerSetup
    size: int
    workers: dict[int, _Process] = field(default_factory=dict)
    started: int = 0

    def __post_init__(self) -> None:
        for _ in range(self.size):
            self.start()

    def start(self) -> int:
        """Start one more worker process; returns its id."""
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve, args=(theirs, self.setup), daemon=True, name=f"seqrl-worker-{self.started}"
        )
        process.start()
        theirs.close()
        self.workers[self.started] = _Process(process, ours)
        self.started += 1
        return self.started - 1

    def idle(self) -> list[int]:
        """Workers without a job."""
        return [worker for worker, state in self.workers.items() if not state.busy]

    def submit(self, worker: int, job: Job) -> None:
        """Give a job to an idle worker."""
        self.workers[worker].busy = True
        self.workers[worker].connection.send(job)

    def events(self, timeout: float) -> list[Event]:
        """What happened within `timeout` seconds; a dead worker is dropped from the pool."""
        by_connection = {state.connection: worker for worker, state in self.workers.items()}
        events = []
        for connection in wait(list(by_connection), timeout):
            worker = by_connection[connection]
            try:
                kind, payload = connection.recv()
            except (EOFError, ConnectionResetError, OSError):
                self._drop(worker)
                events.append(Event(worker, "died"))
                continue
            if kind == "done":
                self.workers[worker].busy = False
            result, message = (payload, "") if kind == "result" else (None, payload or "")
            events.append(Event(worker, kind, result, message))
        return events

    def alive(self) -> int:
        """Workers running or ready."""
        return len(self.workers)

    def _drop(self, worker: int) -> None:
        state = self.workers.pop(worker)
        state.connection.close()
        state.process.join(timeout=5)

    def close(self) -> None:
        """Stop every worker (those mid-episode are killed; their episodes are not logged)."""
        for state in list(self.workers.values()):
            try:
                state.connection.send(None)
            except OSError:
                pass
            if state.busy:
                state.process.kill()
            state.process.join(timeout=5)
            if state.process.is_alive():
                state.process.kill()
            state.connection.close()
        self.workers.clear()


def import_ray() -> Any:
    """The ray module, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise SeqrlError("--ray needs Ray: pip install 'seqrl[ray]' (or drop --ray to run local --workers)") from None
    return ray


class RayPool:
    """Ray actors of `EpisodeWorker`, one per worker, each a streaming generator per job."""

    def __init__(self, setup: WorkerSetup, cluster: str, size: int | None):
        self.ray = import_ray()
        self.setup = setup
        # Ray renices its workers to 15, which starves them next to any other busy process: run them at the
        # driver's priority, as local workers run
        niceness = {"RAY_worker_niceness": str(os.nice(0))}
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if cluster == "local":
            # a local cluster inherits this environment (PYTHONPATH included), so Ray's pre-started workers
            # fit our actors; a runtime_env would make it start others (2 s more here)
            os.environ.update(niceness)
            self.ray.init(num_cpus=(size or 1) * setup.threads, include_dashboard=False, **options)
        else:
            pythonpath = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
            try:
                self.ray.init(address=cluster, runtime_env={"env_vars": {**niceness, **pythonpath}}, **options)
            except ConnectionError as error:
                raise SeqrlError(
                    f"--ray {cluster}: no Ray cluster there ({error}); start one with `ray start --head` "
                    "or pass its address"
                ) from None
        self.size = size or max(1, int(self.ray.cluster_resources().get("CPU", 1)) // setup.threads)
        self.actor_class = self.ray.remote(num_cpus=setup.threads, max_restarts=0)(EpisodeWorker)
        self.actors: dict[int, Any] = {}
        self.streams: dict[int, Any] = {}  # worker -> the generator of its running job
        self.started = 0
        self.packed: dict[Path, Any] = {}  # checkpoint directory -> its files in the object store
        for _ in range(self.size):
            self.start()

    def start(self) -> int:
        """Start one more actor; returns its id."""
        self.actors[self.started] = self.actor_class.remote(self.setup)
        self.started += 1
        return self.started - 1

    def ship(self, job: Job) -> Job:
        """The job with its checkpoint's files in Ray's object store (put once per checkpoint) instead of a path."""
        if job.checkpoint is None:
            return job
        if job.checkpoint not in self.packed:
            self.packed[job.checkpoint] = self.ray.put(pack_checkpoint(job.checkpoint))
        return Job(job.cell, None, job.settings, job.episodes, self.packed[job.checkpoint])

    def idle(self) -> list[int]:
        """Workers without a job."""
        return [worker for worker in self.actors if worker not in self.streams]

    def submit(self, worker: int, job: Job) -> None:
        """Give a job to an idle worker."""
        self.streams[worker] = self.actors[worker].run.remote(self.ship(job))

    def events(self, timeout: float) -> list[Event]:
        """What happened within `timeout` seconds; a dead actor is dropped from the pool."""
        if not self.streams:
            return []
        ready, _ = self.ray.wait(list(self.streams.values()), num_returns=1, timeout=timeout)
        if ready:  # take whatever else is ready too
            ready, _ = self.ray.wait(list(self.streams.values()), num_returns=len(self.streams), timeout=0)
        by_stream = {id(stream): worker for worker, stream in self.streams.items()}
        events = []
        for stream in ready:
            worker = by_stream[id(stream)]
            try:
                result = self.ray.get(next(stream))
            except StopIteration:
                del self.streams[worker]
                events.append(Event(worker, "done"))
            except self.ray.exceptions.RayActorError:
                del self.streams[worker]
                self.ray.kill(self.actors.pop(worker))
                events.append(Event(worker, "died"))
            except self.ray.exceptions.RayTaskError as error:
                events.append(Event(worker, "error", message=_failure(error.cause or error)))
            else:
                events.append(Event(worker, "result", result))
        return events

    def alive(self) -> int:
        """Actors not known to have died."""
        return len(self.actors)

    def close(self) -> None:
        """Kill the actors and leave the cluster (a local one stops)."""
        for actor in self.actors.values():
            self.ray.kill(actor)
        self.actors.clear()
        self.streams.clear()
        self.ray.shutdown()
