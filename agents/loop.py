"""The episode loop: N seeded episodes of an agent on one env or on a vector of envs."""

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from seqrl import SeqrlError
from seqrl.agents.base import Agent
from seqrl.envs.families import d4rl_reference
from seqrl.envs.make import env_identity, make_env, make_vector_env


@dataclass
class EpisodeResult:
    """What one finished episode scored; episode i runs with seed `seed + i`."""

    episode: int
    seed: int
    episode_return: float
    length: int
    normalized_score: float | None
    terminated: bool
    truncated: bool
    wall_time_s: float  # from the episode's reset to its last step
    reference: str | None = None  # source of the score's reference returns: "minari:<dataset id>" or "d4rl:<family>"


@dataclass
class Step:
    """One loop step of the N active slots, handed to an `on_step` callback (progress, recorder)."""

    episodes: list[int]  # episode index in each active slot
    observations: np.ndarray  # (N, obs_dim) what the agent acted on
    actions: np.ndarray  # (N, act_dim)
    rewards: np.ndarray  # (N,)
    next_observations: np.ndarray  # (N, obs_dim) an ended episode's final observation
    terminations: np.ndarray  # (N,) bool
    truncations: np.ndarray  # (N,) bool, the max_steps cap included
    returns: np.ndarray  # (N,) each episode's return so far
    infos: list[dict]  # (N,) the info each slot's env returned for this step
    start_infos: list[dict]  # (N,) the info of each slot's episode reset


class _OneEnv:
    """A gymnasium env seen as a batch of one slot."""

    def __init__(self, env: gym.Env):
        self.env = env
        self.num_slots = 1
        self.observation_space = env.observation_space

    def reset(self, slots: list[int], seeds: list[int]) -> tuple[np.ndarray, list[dict]]:
        observation, info = self.env.reset(seed=seeds[0])
        return observation[None], [info]

    def step(self, actions: np.ndarray, slots: list[int]) -> tuple[np.ndarray, ...]:
        observation, reward, terminated, truncated, info = self.env.step(actions[0])
        return observation[None], np.array([reward]), np.array([terminated]), np.array([truncated]), [info]


def _slot_infos(infos: dict, slots: list[int]) -> list[dict]:
    """Split a vector env's info (key -> (K,) values, "_key" -> (K,) mask) into one dict per slot."""
    return [{key: infos[key][slot] for key in infos if key[:1] != "_" and infos[f"_{key}"][slot]} for slot in slots]


class _ManyEnvs:
    """A vector env with autoreset disabled; slots with no episode left idle on a neutral action."""

    def __init__(self, envs: gym.vector.VectorEnv):
        self.envs = envs
        self.num_slots = envs.num_envs
        self.observation_space = envs.single_observation_space
        space = envs.single_action_space
        self.idle_actions = np.zeros((self.num_slots, *space.shape), space.dtype).clip(space.low, space.high)
        self.needs_reset = np.ones(self.num_slots, dtype=bool)  # sub-envs never reset, or ended since

    def reset(self, slots: list[int], seeds: list[int]) -> tuple[np.ndarray, list[dict]]:
        mask = self.needs_reset.copy()  # idle sub-envs that need it come along, unseeded
        mask[slots] = True
        all_seeds: list[int | None] = [None] * self.num_slots
        for slot, seed in zip(slots, seeds):
            all_seeds[slot] = seed
        observations, infos = self.envs.reset(seed=all_seeds, options={"reset_mask": mask})
        self.needs_reset[:] = False
        return observations[slots], _slot_infos(infos, slots)

    def step(self, actions: np.ndarray, slots: list[int]) -> tuple[np.ndarray, ...]:
        if self.needs_reset.any():  # idle sub-envs that ended: the vector env steps every sub-env, so restart them
            self.envs.reset(options={"reset_mask": self.needs_reset.copy()})
            self.needs_reset[:] = False
        all_actions = self.idle_actions.copy()  # (K, act_dim)
        all_actions[slots] = actions
        observations, rewards, terminations, truncations, infos = self.envs.step(all_actions)
        self.needs_reset = terminations | truncations
        return observations[slots], rewards[slots], terminations[slots], truncations[slots], _slot_infos(infos, slots)


def check_finite(
    values: np.ndarray, what: str, episodes: list[int], slots: list[int], steps: list[int], fix: str
) -> None:
    """A one-line error naming the episode, slot and step of the first row of `values` (N, ...) that is not finite."""
    rows = np.asarray(values, dtype=np.float64).reshape(len(slots), -1)  # (N, values per slot)
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if len(bad):
        j = bad[0]
        raise SeqrlError(
            f"{what} of episode {episodes[j]} (slot {slots[j]}, step {steps[j]}) is not finite "
            f"({np.array2string(rows[j], precision=3, threshold=8)}); {fix}"
        )


ENV_FIX = "fix the env, or wrap it to end the episode on such values"
AGENT_FIX = "the agent's checkpoint or settings are broken (try another checkpoint or --target-return)"


def run_episodes(
    agent: Agent,
    env: gym.Env | gym.vector.VectorEnv,
    episodes: Iterable[int],
    seed: int = 0,
    max_steps: int | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> Iterator[EpisodeResult]:
    """Run the given episode indices (episode i with seed `seed + i`), yielding each result as it ends."""
    envs = _ManyEnvs(env) if isinstance(env, gym.vector.VectorEnv) else _OneEnv(env)
    env_id, _, action_space = env_identity(env)
    reference = agent.reference or d4rl_reference(env_id)
    if max_steps is not None and max_steps < 1:
        raise SeqrlError(f"max_steps {max_steps} must be at least 1 (or None for the env's own limit)")
    action_shape = action_space.shape
    pending = iter(sorted(episodes))
    slot_count = envs.num_slots
    episode_in: list[int | None] = [None] * slot_count  # episode index each slot runs, None when idle
    returns = [0.0] * slot_count
    lengths = [0] * slot_count
    started = [0.0] * slot_count
    start_infos: list[dict] = [{}] * slot_count

    def start(slots: list[int]) -> dict[int, np.ndarray]:
        """Give each of `slots` its next pending episode; return the first observation of each started one."""
        for slot in slots:
            episode_in[slot] = next(pending, None)
        starting = [slot for slot in slots if episode_in[slot] is not None]
        if not starting:
            return {}
        seeds = [seed + episode_in[slot] for slot in starting]
        now = time.perf_counter()
        first_observations, infos = envs.reset(starting, seeds)  # (len(starting), obs_dim)
        check_finite(
            first_observations,
            "the reset observation",
            [episode_in[s] for s in starting],
            starting,
            [0] * len(starting),
            ENV_FIX,
        )
        for slot, episode_seed, info in zip(starting, seeds, infos):
            started[slot], returns[slot], lengths[slot], start_infos[slot] = now, 0.0, 0, info
            agent.reset(seed=episode_seed, slot=slot)
        return dict(zip(starting, first_observations))

    # `observations` row j belongs to slot active[j]; both change only when an episode ends.
    rows = start(list(range(slot_count)))
    active = sorted(rows)
    observations = np.stack([rows[slot] for slot in active]) if active else None  # (N, obs_dim)
    while active:
        actions = np.asarray(agent.act_batch(observations, active))  # (N, act_dim)
        episodes_now, steps_now = [episode_in[slot] for slot in active], [lengths[slot] for slot in active]
        if actions.shape != (len(active), *action_shape):
            raise SeqrlError(
                f"{agent.name} agent returned actions of shape {actions.shape}; the env takes "
                f"{(len(active), *action_shape)} for {len(active)} slot(s)"
            )
        check_finite(actions, "the action", episodes_now, active, steps_now, AGENT_FIX)
        next_observations, rewards, terminations, truncations, infos = envs.step(actions, active)
        check_finite(rewards, "the reward", episodes_now, active, steps_now, ENV_FIX)
        check_finite(next_observations, "the observation", episodes_now, active, steps_now, ENV_FIX)
        agent.observe_batch(rewards, active)
        ended = []
        for j, (slot, reward) in enumerate(zip(active, rewards.tolist())):
            returns[slot] += reward
            lengths[slot] += 1
            if max_steps is not None and lengths[slot] >= max_steps:
                truncations[j] = True
            if terminations[j] or truncations[j]:
                ended.append(j)
        if on_step is not None:
            returns_now = np.array([returns[slot] for slot in active])
            on_step(
                Step(
                    episodes_now,
                    observations,
                    actions,
                    rewards,
                    next_observations,
                    terminations,
                    truncations,
                    returns_now,
                    infos,
                    [start_infos[slot] for slot in active],
                )
            )
        observations = next_observations
        if not ended:
            continue
        now = time.perf_counter()
        for j in ended:
            slot = active[j]
            yield EpisodeResult(
                episode=episode_in[slot],
                seed=seed + episode_in[slot],
                episode_return=returns[slot],
                length=lengths[slot],
                normalized_score=None if reference is None else reference.score(returns[slot]),
                terminated=bool(terminations[j]),
                truncated=bool(truncations[j]),
                wall_time_s=now - started[slot],
                reference=None if reference is None else reference.source,
            )
        rows = {slot: observations[j] for j, slot in enumerate(active) if j not in ended}
        rows.update(start([active[j] for j in ended]))
        active = sorted(rows)
        observations = np.stack([rows[slot] for slot in active]) if active else None


def evaluate(
    agent: Agent,
    env: str | gym.Env | gym.vector.VectorEnv,
    episodes: int,
    seed: int = 0,
    max_steps: int | None = None,
    num_envs: int = 1,
) -> list[EpisodeResult]:
    """Results of episodes 0..episodes-1 (seeds seed, seed+1, ...) in episode order; `num_envs` applies to an env id."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise SeqrlError(f"episodes {episodes!r} must be a whole number of at least 1")
    if isinstance(env, str):
        with closing(make_env(env) if num_envs == 1 else make_vector_env(env, num_envs)) as built:
            return evaluate(agent, built, episodes, seed, max_steps)
    return sorted(run_episodes(agent, env, range(episodes), seed, max_steps), key=lambda result: result.episode)
