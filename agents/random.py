"""A seeded uniform-random agent: the baseline and the loop's smoke test."""

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from seqrl import SeqrlError
from seqrl.agents.base import Agent


class RandomAgent(Agent):
    """Samples actions uniformly from a Box action space, one generator per slot."""

    name = "random"

    def __init__(self, action_space: gym.spaces.Box):
        if not isinstance(action_space, gym.spaces.Box) or not np.isfinite([action_space.low, action_space.high]).all():
            raise SeqrlError(f"the random agent samples bounded Box action spaces, not {action_space}")
        self.low = action_space.low.astype(np.float64)
        self.high = action_space.high.astype(np.float64)
        self.dtype = action_space.dtype
        self.rngs: dict[int, np.random.Generator] = {}

    def reset(self, seed: int | None = None, slot: int = 0) -> None:
        self.rngs[slot] = np.random.default_rng(seed)

    def act_batch(self, observations: np.ndarray, slots: Sequence[int]) -> np.ndarray:
        missing = [slot for slot in slots if slot not in self.rngs]
        if missing:
            raise SeqrlError(
                f"act called on slot(s) {missing} before reset; call reset(seed, slot=...) at each episode start"
            )
        actions = [self.rngs[s].uniform(self.low, self.high) for s in slots]
        return np.array(actions, dtype=self.dtype)  # (N, act_dim)
