"""Training windows for the Decision Transformer: K-step slices of episodes, left-padded, sampled by episode length."""

from dataclasses import dataclass

import numpy as np
import torch
from seqrl.envs.datasets import Episode

Window = tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]  # states, actions, returns, timesteps, mask


@dataclass
class EpisodeSteps:
    """All steps of some episodes in flat arrays, ready to slice into windows."""

    states: np.ndarray  # (N, state_dim) float32, normalized
    actions: np.ndarray  # (N, act_dim) float32
    returns_to_go: np.ndarray  # (N,) float32, scaled: sum of this and later rewards of the episode / return_scale
    timesteps: np.ndarray  # (N,) int64, step within the episode, clipped to max_ep_len - 1
    starts: np.ndarray  # (E,) index of each episode's first step
    lengths: np.ndarray  # (E,) steps per episode


def episode_steps(
    episodes: list[Episode], state_mean: np.ndarray, state_std: np.ndarray, return_scale: float, max_ep_len: int
) -> EpisodeSteps:
    """Normalize states, compute undiscounted returns-to-go and timesteps of every step of `episodes`."""
    lengths = np.array([len(e) for e in episodes], dtype=np.int64)
    returns = [np.cumsum(e.rewards[::-1], dtype=np.float64)[::-1] for e in episodes]
    return EpisodeSteps(
        states=((np.concatenate([e.observations for e in episodes]) - state_mean) / state_std).astype(np.float32),
        actions=np.concatenate([e.actions for e in episodes]).astype(np.float32),
        returns_to_go=(np.concatenate(returns) / return_scale).astype(np.float32),
        timesteps=np.minimum(np.concatenate([np.arange(n) for n in lengths]), max_ep_len - 1),
        starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
        lengths=lengths,
    )


def sample_windows(steps: EpisodeSteps, count: int, context_length: int, rng: np.random.Generator) -> Window:
    """`count` windows of up to K steps: episodes drawn in proportion to length, start uniform within the episode.

    A window that runs past its episode's end keeps the steps it has and is left-padded (mask 0), as in the
    original gym experiment.
    """
    K = context_length
    episode = rng.choice(len(steps.lengths), size=count, p=steps.lengths / steps.lengths.sum())
    start = rng.integers(0, steps.lengths[episode])  # (B,)
    real = np.minimum(K, steps.lengths[episode] - start)  # (B,) steps that exist
    offset = np.arange(K)[None, :] - (K - real)[:, None]  # (B, K): step index within the window, < 0 for padding
    mask = offset >= 0
    index = steps.starts[episode][:, None] + start[:, None] + np.maximum(offset, 0)  # (B, K) rows into the flat arrays
    return (
        torch.from_numpy(steps.states[index] * mask[..., None]),
        torch.from_numpy(steps.actions[index] * mask[..., None]),
        torch.from_numpy(steps.returns_to_go[index] * mask)[..., None],  # (B, K, 1)
        torch.from_numpy(steps.timesteps[index] * mask),
        torch.from_numpy(mask.astype(np.int64)),
    )
