"""`--record`: write a rollout's episodes into a Minari dataset, one finished episode at a time.

The dataset carries what Minari's own tools need: the env spec with the step limit the rollout ran under,
each step's `infos`, and ref_min_score/ref_max_score (the rollout's reference returns: the agent's dataset's
own, else D4RL's random and expert returns of the env family), so `minari.get_normalized_score` works on it.
"""

import dataclasses
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gymnasium as gym
import numpy as np
from seqrl import SeqrlError
from seqrl.agents.loop import EpisodeResult, Step
from seqrl.envs.families import Reference, d4rl_reference


def default_record_id(env_id: str) -> str:
    """`seqrl/<env name, lower case>/rollout-v0`, e.g. seqrl/hopper/rollout-v0 for Hopper-v5."""
    _, name, _ = gym.envs.registration.parse_env_id(env_id)
    return f"seqrl/{name.lower()}/rollout-v0"


@contextmanager
def _datasets_root(root: Path) -> Iterator[None]:
    """Point minari's MINARI_DATASETS_PATH at `root` for the block."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


class Recorder:
    """An `on_step` callback that buffers each running episode and appends it to a Minari dataset when it ends."""

    def __init__(
        self,
        root: str | os.PathLike,
        dataset_id: str,
        env: gym.Env,
        agent: str,
        resume: bool = False,
        max_steps: int | None = None,
        reference: Reference | None = None,
    ):
        from minari import MinariDataset
        from minari.dataset.minari_dataset import parse_dataset_id

        try:
            parse_dataset_id(dataset_id)
        except (ValueError, TypeError):
            raise SeqrlError(
                f"--record-id {dataset_id!r} is not a Minari dataset id; use the form namespace/name-v0"
            ) from None
        self.root, self.dataset_id, self.env, self.agent = Path(root).resolve(), dataset_id, env, agent
        self.max_steps = max_steps  # the rollout's --max-steps cap, if any
        self.reference = reference or d4rl_reference(env.spec.id)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SeqrlError(f"cannot create --record {root} ({error.strerror}); pick a writable directory") from None
        self.dataset = None  # created with the first finished episode
        self.recorded_seeds: set[int] = set()
        self.episodes: dict[int, dict[str, list]] = {}  # running episode index -> its steps so far
        path = self.root / dataset_id
        if not path.exists():
            return
        if not resume:
            raise SeqrlError(
                f"dataset {dataset_id} already exists in {self.root}; choose another --record-id, delete it, "
                "or continue it with --resume and the --log FILE of the run that recorded it"
            )
        self.dataset = MinariDataset(path / "data")
        if self.dataset.spec.env_spec is not None and self.dataset.spec.env_spec.id != env.spec.id:
            raise SeqrlError(
                f"dataset {dataset_id} in {self.root} holds {self.dataset.spec.env_spec.id} episodes, "
                f"not {env.spec.id}; choose another --record-id"
            )
        # an episode written just before a crash, but not yet logged, is run again: record it once
        metadata = self.dataset.storage.get_episode_metadata(self.dataset.episode_indices)
        self.recorded_seeds = {episode["seed"] for episode in metadata if "seed" in episode}

    def __call__(self, step: Step) -> None:
        for j, episode in enumerate(step.episodes):
            if episode not in self.episodes:
                self.episodes[episode] = {
                    "observations": [np.array(step.observations[j])],
                    "actions": [],
                    "rewards": [],
                    "terminations": [],
                    "truncations": [],
                    "infos": [step.start_infos[j]],  # Minari's layout: the reset's info, then one per step
                }
            steps = self.episodes[episode]
            steps["observations"].append(np.array(step.next_observations[j]))
            steps["actions"].append(np.array(step.actions[j]))
            steps["rewards"].append(step.rewards[j])
            steps["terminations"].append(step.terminations[j])
            steps["truncations"].append(step.truncations[j])
            steps["infos"].append(step.infos[j])

    def save(self, result: EpisodeResult) -> None:
        """Append the finished episode `result` reports to the dataset, creating the dataset first if needed."""
        from minari import create_dataset_from_buffers
        from minari.data_collector import EpisodeBuffer

        steps = self.episodes.pop(result.episode)
        if result.seed in self.recorded_seeds:
            return
        infos = _info_columns(steps.pop("infos"))
        arrays = {name: np.stack(values) for name, values in steps.items()}
        episode = EpisodeBuffer(seed=result.seed, infos=infos, **arrays)
        if self.dataset is None:
            spec = self._recorded_spec()
            reference = self.reference
            scores = {"ref_min_score": reference.min_return, "ref_max_score": reference.max_return} if reference else {}
            scored = f"; ref_min_score and ref_max_score: {reference.source}" if reference else ""
            with _datasets_root(self.root), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # minari asks for author, e-mail and code links
                self.dataset = create_dataset_from_buffers(
                    self.dataset_id,
                    [episode],
                    env=spec,
                    eval_env=spec,
                    algorithm_name=self.agent,
                    description=f"seqrl rollout of {self.agent} on {self.env.spec.id}{scored}",
                    **scores,
                )
        else:
            self.dataset.update_dataset_from_buffer([episode])
        self.recorded_seeds.add(result.seed)

    def _recorded_spec(self) -> gym.envs.registration.EnvSpec:
        """The env's spec with the step limit the episodes ran under and no render mode."""
        spec = self.env.spec
        limits = [limit for limit in (spec.max_episode_steps, self.max_steps) if limit is not None]
        kwargs = {key: value for key, value in spec.kwargs.items() if key != "render_mode"}
        return dataclasses.replace(spec, max_episode_steps=min(limits, default=None), kwargs=kwargs)


def _info_columns(infos: list[dict]) -> dict[str, np.ndarray]:
    """Per-step info dicts as one column per numeric scalar key; NaN where a row lacks it (MuJoCo's reset info)."""
    keys = list(dict.fromkeys(key for info in infos for key in info))
    columns = {key: np.asarray([info.get(key, np.nan) for info in infos]) for key in keys}
    return {key: column for key, column in columns.items() if column.dtype.kind in "biuf" and column.ndim == 1}
