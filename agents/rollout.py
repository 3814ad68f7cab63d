"""`seqrl rollout`: run an agent's episodes with a progress display, a JSONL log, a Minari recording and a summary."""

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
from rich.console import Console
from seqrl import SeqrlError, __version__
from seqrl.agents.base import Agent
from seqrl.agents.episode_log import EpisodeLog, episode_record, record_result
from seqrl.agents.loop import EpisodeResult, Step, run_episodes
from seqrl.agents.options import MAX_SEED, Options, check_seed_range, option
from seqrl.agents.prediction import PredictionPlot, predict_plot_path
from seqrl.agents.recorder import Recorder, default_record_id
from seqrl.agents.report import RolloutProgress, summary_table
from seqrl.agents.video import EpisodeVideo
from seqrl.envs.make import make_env, make_vector_env

BUILT_IN_AGENTS = ("random", "tt", "dt")  # tt and dt: the checkpoints bundled for the env
MAX_EPISODES = 10_000_000


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


@dataclass(frozen=True, kw_only=True)
class RolloutOptions(Options):
    """Everything `seqrl rollout` takes; `settings` are the agent's own (planner or policy), validated by its loader."""

    env: str = option(help="Gymnasium MuJoCo env id, e.g. Hopper-v5.")
    agent: str | None = option(
        None,
        "Built-in agent: dt or tt (the env's bundled trained agent) or random; default: the env's bundled agent, "
        "else random.",
        choices=BUILT_IN_AGENTS,
    )
    checkpoint: str | None = option(
        None, "Checkpoint directory, bundled:NAME or hf:ORG/NAME[@REVISION] of a TT planner or DT policy."
    )
    dataset: str | None = option(None, "Dataset the checkpoint agent takes its statistics from, if it needs one.")
    state_mean: str | None = option(
        None,
        "DT state means, comma-separated, one per observation dimension (with --state-std); override the checkpoint's.",
    )
    state_std: str | None = option(None, "DT state standard deviations, comma-separated (with --state-mean).")
    state_statistics: Path | None = option(
        None, 'JSON file {"state_mean": [...], "state_std": [...]} of DT state statistics; overrides the checkpoint\'s.'
    )
    episodes: int = option(10, "Episodes to run; episode i uses seed SEED + i.", low=1, high=MAX_EPISODES)
    seed: int = option(0, "Seed of episode 0 (env reset and the agent's random stream).", low=0, high=MAX_SEED)
    max_steps: int | None = option(
        None, "Cap on steps per episode; a capped episode ends truncated (default: the env's own limit).", low=1
    )
    num_envs: int = option(1, "Envs stepped together (one batched agent call per step).", low=1, high=1024)
    log: Path | None = option(None, "Append one JSON line per finished episode to this file.")
    resume: bool = option(False, "Skip the episodes --log already holds for these settings.")
    record: Path | None = option(None, "Minari datasets root to record the episodes into.")
    record_id: str | None = option(None, "Id of the recorded dataset (default: seqrl/<env name>/rollout-v0).")
    device: str = option("cpu", "Where the agent's model runs: cpu or cuda.", choices=("cpu", "cuda"))
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice).", low=1, high=1024)
    quiet: bool = option(False, "Print nothing but errors.")
    video: Path | None = option(None, "Film the first episode offscreen into this MP4 file (needs seqrl[video]).")
    show_plan: bool = option(False, "Beside each --video frame, draw the states the TT planner's best plan expects.")
    predict: int | None = option(
        None,
        "Plot the TT model's H-step open-loop predictions of the first episode (fed the actions taken) against what "
        "happened, into <--video or --log stem>-predict.png (needs seqrl[plot]).",
        low=1,
        high=1000,
    )
    settings: dict = option({}, "The agent's settings that override its checkpoint's (planner or policy).", cli=False)

    def check(self) -> None:
        """Flags that only make sense together, and seeds that stay in range."""
        if self.agent is not None and self.checkpoint is not None:
            raise SeqrlError("--agent and --checkpoint both given; pick one")
        if self.dataset is not None and self.checkpoint is None:
            raise SeqrlError("--dataset applies to --checkpoint agents; drop it or add --checkpoint DIR")
        given = (self.state_mean, self.state_std, self.state_statistics)
        if any(value is not None for value in given) and self.checkpoint is None:
            raise SeqrlError("state statistics apply to --checkpoint agents; drop them or add --checkpoint DIR")
        if self.resume and self.log is None:
            raise SeqrlError("--resume continues a log; add --log FILE")
        if self.record_id is not None and self.record is None:
            raise SeqrlError("--record-id names the dataset that --record DIR writes; add --record DIR")
        if self.video is not None and self.num_envs != 1:
            raise SeqrlError("--video films one env; drop --num-envs or set it to 1")
        if self.show_plan and self.video is None:
            raise SeqrlError("--show-plan draws the plan beside the --video frames; add --video FILE.mp4")
        for flag, given in (("--show-plan", self.show_plan), ("--predict", self.predict is not None)):
            if given and self.agent in ("random", "dt"):
                raise SeqrlError(f"{flag} needs a model of the env: use --agent tt or a TT --checkpoint")
        if self.predict is not None:
            predict_plot_path(self.video, self.log)
        check_seed_range(self.seed, self.episodes)


# Builds the agent to run on an env (one env: its spaces and spec) for these options: the agent, its name for
# logs, and a line saying which agent runs. The planners package provides it (`seqrl.planners.choose_agent`).
AgentFactory = Callable[[gym.Env, RolloutOptions], tuple[Agent, str, str]]


def rollout(options: RolloutOptions, make_agent: AgentFactory) -> int:
    """Run, log, record and summarise the episodes; return the exit status (0, or 128 + signal when interrupted)."""
    env_id, episodes, seed, log = options.env, options.episodes, options.seed, options.log
    console = Console(quiet=options.quiet, highlight=False)
    interrupts = _Interrupts()
    env = episode_log = recorder = film = prediction = None
    results: list[EpisodeResult] = []
    status = 0
    failure: SeqrlError | None = None
    try:
        render_mode = None if options.video is None else "rgb_array"
        num_envs = options.num_envs
        env = make_env(env_id, render_mode) if num_envs == 1 else make_vector_env(env_id, num_envs)
        single_env = env if num_envs == 1 else env.envs[0]  # the spaces and spec that agents and recorder need
        runner, name, which = make_agent(single_env, options)
        console.print(which)
        if (options.show_plan or options.predict is not None) and not runner.has_model:
            flag = "--show-plan" if options.show_plan else "--predict"
            raise SeqrlError(f"{flag} needs a model of the env; the {name} agent has none: use a TT --checkpoint")
        config = {**runner.settings(), "max_steps": options.max_steps, "seqrl_version": __version__}
        done = {}
        if log is not None:
            episode_log = EpisodeLog(log)
            if episode_log.dropped_torn_line:
                warning = f"warning: dropped the torn last line of {log} (a write cut short by a crash)"
                Console(stderr=True, highlight=False).print(warning)  # even with --quiet: the file changed
            done = episode_log.finished(env_id, name, config, seed) if options.resume else {}
        results = [record_result(record) for episode, record in done.items() if episode < episodes]
        if results:
            console.print(f"resuming: {len(results)} of {episodes} episodes are already in {log}")
        if options.record is not None:
            record_id = options.record_id or default_record_id(env_id)
            recorder = Recorder(
                options.record,
                record_id,
                single_env,
                name,
                resume=options.resume,
                max_steps=options.max_steps,
                reference=runner.reference,
            )
        progress = RolloutProgress(episodes, len(results), Console(stderr=True), disable=options.quiet)

        pending = [episode for episode in range(episodes) if episode not in done]
        if options.video is not None and pending:
            film = EpisodeVideo(options.video, env, pending[0], runner if options.show_plan else None)
        if options.predict is not None and pending:
            path = predict_plot_path(options.video, options.log)
            prediction = PredictionPlot(path, runner, env_id, pending[0], options.predict)

        def on_step(step: Step) -> None:
            progress.on_step(step)
            if recorder is not None:
                recorder(step)
            if film is not None:
                film.add_frame(step.episodes)
            if prediction is not None:
                prediction.on_step(step)

        with progress:
            for result in run_episodes(runner, env, pending, seed, options.max_steps, on_step):
                with interrupts.held():  # a finished episode is saved whole, or the signal waits
                    if recorder is not None:
                        recorder.save(result)
                    if episode_log is not None:
                        episode_log.append(episode_record(env_id, name, result, config))
                    results.append(result)
                    progress.episode_done()
                if film is not None and result.episode == film.episode:
                    film.close()
                if prediction is not None and result.episode == prediction.episode:
                    prediction.write()
    except KeyboardInterrupt:
        status = 128 + (interrupts.signum or signal.SIGINT)
    except SeqrlError as error:  # e.g. the log's disk filled, or the env returned NaN: report what finished first
        failure = error
    finally:
        interrupts.restore()
        if film is not None:
            film.close()
        if env is not None:
            env.close()
        if episode_log is not None:
            episode_log.close()
    _report(console, options, results, recorder, film, prediction, status)
    if failure is not None:
        raise failure
    return status


def _report(
    console: Console,
    options: RolloutOptions,
    results: list[EpisodeResult],
    recorder: Recorder | None,
    film: EpisodeVideo | None,
    prediction: PredictionPlot | None,
    status: int,
) -> None:
    env_id, episodes, log, record = options.env, options.episodes, options.log, options.record
    if results:
        console.print(summary_table(results, f"{env_id}: {len(results)} of {episodes} episodes"))
    if log is not None and results:
        console.print(f"log: {log}")
    if recorder is not None and recorder.dataset is not None:
        console.print(f"recorded: {recorder.dataset_id} under {record} (MINARI_DATASETS_PATH={record})")
    if film is not None and film.written:
        console.print(f"video: {film.path} (episode {film.episode}, {film.frames} frames)")
    if prediction is not None and prediction.written:
        ahead = f"episode {prediction.episode}, {prediction.horizon} steps ahead"
        console.print(f"predictions: {prediction.path} ({ahead})")
    if status:
        kept = (
            f"kept in {log}; continue with --resume" if log is not None else "not logged (add --log FILE to keep them)"
        )
        console.print(
            f"interrupted by {signal.Signals(status - 128).name}: "
            f"{len(results)} of {episodes} episodes finished, {kept}"
        )
