"""The agent protocol: what the episode loop and users' own env loops call."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from seqrl.envs.families import Reference


class Agent(ABC):
    """A policy that runs one episode per slot; slot 0 is the single-env case.

    The loop (or a user's own env loop) calls, per slot and episode:
    `reset(seed, slot)` once, then alternately `act` and `observe(reward)`.
    Batched agents push every slot through one model call in `act_batch`.
    """

    name: str = "agent"
    reference: Reference | None = None  # what normalized scores are relative to (None: D4RL's for the env)
    has_model: bool = False  # whether `plan` and `predict` answer: the agent holds a model of the env

    @abstractmethod
    def reset(self, seed: int | None = None, slot: int = 0) -> None:
        """Start a new episode in `slot`, seeding the agent's own random stream with `seed`."""

    @abstractmethod
    def act_batch(self, observations: np.ndarray, slots: Sequence[int]) -> np.ndarray:
        """Actions (N, act_dim) for observations (N, obs_dim) of the episodes in `slots`."""

    def observe_batch(self, rewards: np.ndarray, slots: Sequence[int]) -> None:  # noqa: B027 - optional hook
        """Record the rewards (N,) that the last actions of `slots` earned (agents that ignore rewards keep this)."""

    def settings(self) -> dict[str, Any]:
        """The settings that define this agent, for logs (JSON-serialisable)."""
        return {"agent": self.name}

    def plan(self, slot: int = 0) -> np.ndarray | None:
        """Observations (steps, obs_dim) the current plan of `slot` expects from the env's latest one on, if any."""
        return None

    def predict(
        self, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Open-loop model predictions from step t of an episode, or None for agents without a model of the env.

        Given its observations (t + 1, obs_dim) up to step t, rewards (t,) before it and the actions (t + h, act_dim)
        taken up to step t + h - 1, the observations (h, obs_dim) of steps t + 1 .. t + h and rewards (h,) of
        steps t .. t + h - 1 that the model expects.
        """
        return None

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action for one observation in slot 0."""
        return self.act_batch(np.asarray(observation)[None], [0])[0]

    def observe(self, reward: float) -> None:
        """Record the reward that slot 0's last action earned."""
        self.observe_batch(np.asarray([reward], dtype=np.float64), [0])
