"""A seeded uniform-random agent: the baseline and the loop's smoke test."""

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from seqrl.agents.base import Agent


class RandomAgent(Agent):
    """Samples actions uniformly from a Box action space, one generator per slot."""

    name = "random"

    def __init__(self, action_space: gym.spaces.Box):
        self.low = action_space.low.astype(np.float64)
        self.high = action_space.high.astype(np.float64)
        self.dtype = action_space.dtype
        self.rngs: dict[int, np.random.Generator] = {}

    def reset(self, seed: int | None = None, slot: int = 0) -> None:
        self.rngs[slot] = np.random.default_rng(seed)

    def act_batch(self, observations: np.ndarray, slots: Sequence[int]) -> np.ndarray:
        actions = [self.rngs[s].uniform(self.low, self.high) for s in slots]
        return np.array(actions, dtype=self.dtype)  # (N, act_dim)
