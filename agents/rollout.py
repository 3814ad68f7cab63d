"""`seqrl rollout`: run an agent's episodes with a progress display, a JSONL log, a Minari recording and a summary."""

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
from rich.console import Console

from seqrl import SeqrlError, __version__
from seqrl.agents.base import Agent
from seqrl.agents.bundled import bundled_checkpoint, bundled_methods
from seqrl.agents.episode_log import EpisodeLog, episode_record, record_result
from seqrl.agents.loop import EpisodeResult, Step, run_episodes
from seqrl.agents.recorder import Recorder, default_record_id
from seqrl.agents.report import RolloutProgress, summary_table
from seqrl.agents.video import EpisodeVideo
from seqrl.envs.make import make_env, make_vector_env

BUILT_IN_AGENTS = ("random", "tt", "dt")  # tt and dt: the checkpoints bundled for the env


class _Interrupts:
    """SIGINT and SIGTERM raise KeyboardInterrupt, but not while a finished episode is being saved."""

    def __init__(self):
        self.signum: int | None = None
        self.holding = False
        self.previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        if not self.holding:
            raise KeyboardInterrupt

    @contextmanager
    def held(self) -> Iterator[None]:
        """Delay a signal that arrives inside the block until the block ends."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.signum is not None:
            raise KeyboardInterrupt

    def restore(self) -> None:
        """Put back the handlers that were there before."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _check_arguments(
    agent: str | None, checkpoint: str | None, dataset: str | None, episodes: int, max_steps: int | None,
    num_envs: int, log: Path | None, resume: bool, record: Path | None, record_id: str | None, device: str, threads: int | None,
    video: Path | None,
) -> None:
    for flag, value in (("--episodes", episodes), ("--num-envs", num_envs), ("--max-steps", max_steps), ("--threads", threads)):
        if value is not None and value < 1:
            raise SeqrlError(f"{flag} must be at least 1, got {value}")
    if agent is not None and checkpoint is not None:
        raise SeqrlError("--agent and --checkpoint both given; pick one")
    if agent is not None and agent not in BUILT_IN_AGENTS:
        raise SeqrlError(f"unknown --agent {agent!r}; pick one of {', '.join(BUILT_IN_AGENTS)}, or load a trained agent with --checkpoint DIR")
    if dataset is not None and checkpoint is None:
        raise SeqrlError("--dataset applies to --checkpoint agents; drop it or add --checkpoint DIR")
    if resume and log is None:
        raise SeqrlError("--resume continues a log; add --log FILE")
    if record_id is not None and record is None:
        raise SeqrlError("--record-id names the dataset that --record DIR writes; add --record DIR")
    if video is not None and num_envs != 1:
        raise SeqrlError("--video films one env; drop --num-envs or set it to 1")
    if device not in ("cpu", "cuda"):
        raise SeqrlError(f"--device must be cpu or cuda, got {device!r}")


def _make_agent(
    env: gym.Env, agent: str | None, checkpoint: str | None, dataset: str | None, device: str, threads: int | None, options: dict[str, Any]
) -> tuple[Agent, str, str]:
    """The agent to run, its name for logs, and a line saying which agent runs."""
    bundled = None
    if checkpoint is None and agent != "random":
        bundled = bundled_checkpoint(env.spec.id, agent)
        if bundled is None and agent is not None:
            shipped = ", ".join(bundled_methods(env.spec.id)) or "none"
            raise SeqrlError(f"no bundled {agent} agent for {env.spec.id} (bundled: {shipped}); train one and pass --checkpoint DIR")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SeqrlError("--device cuda but no CUDA GPU is visible; use --device cpu")
    if checkpoint is not None or bundled is not None:
        from seqrl.planners import load_agent

        source = checkpoint if checkpoint is not None else str(bundled)
        loaded = load_agent(source, env, dataset=dataset, device=device, **options)
        name = checkpoint if checkpoint is not None else f"bundled:{bundled.name}"
        return loaded, name, f"agent: {loaded.name} from {name}"
    from seqrl.agents.random import RandomAgent

    note = "" if agent is not None else f" (no trained agent is bundled for {env.spec.id}; pass --checkpoint DIR)"
    return RandomAgent(env.action_space), "random", f"agent: random{note}"


def rollout(
    env_id: str, agent: str | None, checkpoint: str | None, dataset: str | None, episodes: int, seed: int,
    max_steps: int | None, num_envs: int, log: Path | None, resume: bool, record: Path | None, record_id: str | None,
    device: str, threads: int | None, quiet: bool, video: Path | None, options: dict[str, Any],
) -> int:
    """Run, log, record and summarise the episodes; return the exit status (0, or 128 + signal when interrupted)."""
    _check_arguments(agent, checkpoint, dataset, episodes, max_steps, num_envs, log, resume, record, record_id, device, threads, video)
    console = Console(quiet=quiet, highlight=False)
    interrupts = _Interrupts()
    env = episode_log = recorder = film = None
    results: list[EpisodeResult] = []
    status = 0
    try:
        render_mode = None if video is None else "rgb_array"
        env = make_env(env_id, render_mode) if num_envs == 1 else make_vector_env(env_id, num_envs)
        single_env = env if num_envs == 1 else env.envs[0]  # the spaces and spec that agents and recorder need
        runner, name, which = _make_agent(single_env, agent, checkpoint, dataset, device, threads, options)
        console.print(which)
        config = {**runner.settings(), "max_steps": max_steps, "seqrl_version": __version__}
        done = {}
        if log is not None:
            episode_log = EpisodeLog(log)
            done = episode_log.finished(env_id, name, config, seed) if resume else {}
        results = [record_result(record) for episode, record in done.items() if episode < episodes]
        if results:
            console.print(f"resuming: {len(results)} of {episodes} episodes are already in {log}")
        if record is not None:
            recorder = Recorder(record, record_id or default_record_id(env_id), single_env, name, resume=resume)
        progress = RolloutProgress(episodes, len(results), Console(stderr=True), disable=quiet)

        pending = [episode for episode in range(episodes) if episode not in done]
        if video is not None and pending:
            film = EpisodeVideo(video, env, pending[0])

        def on_step(step: Step) -> None:
            progress.on_step(step)
            if recorder is not None:
                recorder(step)
            if film is not None:
                film.add_frame(step.episodes)

        with progress:
            for result in run_episodes(runner, env, pending, seed, max_steps, on_step):
                with interrupts.held():  # a finished episode is saved whole, or the signal waits
                    if recorder is not None:
                        recorder.save(result)
                    if episode_log is not None:
                        episode_log.append(episode_record(env_id, name, result, config))
                    results.append(result)
                    progress.episode_done()
                if film is not None and result.episode == film.episode:
                    film.close()
    except KeyboardInterrupt:
        status = 128 + (interrupts.signum or signal.SIGINT)
    finally:
        interrupts.restore()
        if film is not None:
            film.close()
        if env is not None:
            env.close()
        if episode_log is not None:
            episode_log.close()
    _report(console, env_id, results, episodes, log, record, recorder, film, status)
    return status


def _report(console: Console, env_id: str, results: list[EpisodeResult], episodes: int, log: Path | None,
            record: Path | None, recorder: Recorder | None, film: EpisodeVideo | None, status: int) -> None:
    if results:
        console.print(summary_table(results, f"{env_id}: {len(results)} of {episodes} episodes"))
    if log is not None and results:
        console.print(f"log: {log}")
    if recorder is not None and recorder.dataset is not None:
        console.print(f"recorded: {recorder.dataset_id} under {record} (MINARI_DATASETS_PATH={record})")
    if film is not None and film.frames:
        console.print(f"video: {film.path} (episode {film.episode}, {film.frames} frames)")
    if status:
        kept = f"kept in {log}; continue with --resume" if log is not None else "not logged (add --log FILE to keep them)"
        console.print(f"interrupted by {signal.Signals(status - 128).name}: {len(results)} of {episodes} episodes finished, {kept}")
