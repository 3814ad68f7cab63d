"""Trajectory Transformer training data, as the original: [obs, action, reward, value] rows cut into token windows."""

import numpy as np
import torch
from seqrl.envs.datasets import Episode
from seqrl.planners.trajectory.discretizer import Discretizer


def episode_transitions(episode: Episode, discount: float, termination_penalty: float) -> np.ndarray:
    """Rows [observation, action, reward, value] (T, obs_dim + act_dim + 2) float64 of one episode.

    The reward of a real terminal step becomes `termination_penalty`; the value of step t is
    sum_{k>=1} discount^(k-1) * reward_(t+k), so the last step's value is 0 and r_t is left out.
    """
    rewards = episode.rewards.astype(np.float64)
    rewards[episode.terminations] = termination_penalty
    values = np.zeros_like(rewards)
    for t in range(len(rewards) - 2, -1, -1):
        values[t] = rewards[t + 1] + discount * values[t + 1]
    return np.concatenate([episode.observations, episode.actions, rewards[:, None], values[:, None]], axis=1)


class TokenWindows(torch.utils.data.Dataset):
    """Windows of `sequence_length` tokenized transitions starting at every step but an episode's last.

    Item i (or a batch: an index tensor) is `(x, y, mask)`, each (..., sequence_length * transition_dim - 1):
    the flattened window without its last token, the same shifted by one, and the loss weight of each
    input position. Positions past an episode's end hold the stop token and are trained on; the mask is 0
    only where the transition's step is at or beyond `max_path_length`, and (as in the original) it is
    the mask of the input token, not of the target.
    """

    def __init__(
        self, tokens: torch.Tensor, lengths: list[int], sequence_length: int, max_path_length: int, stop_token: int
    ) -> None:
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        padded = lengths + sequence_length - 1  # every episode is followed by sequence_length - 1 stop rows
        first_row = torch.cumsum(padded, 0) - padded
        episode_of_row = torch.repeat_interleave(torch.arange(len(lengths)), padded)
        step_of_row = torch.arange(int(padded.sum())) - first_row[episode_of_row]
        is_data = step_of_row < lengths[episode_of_row]

        dtype = torch.int16 if stop_token < 2**15 else torch.int32  # compact storage; batches come out int64
        self.tokens = torch.full((len(step_of_row), tokens.shape[1]), stop_token, dtype=dtype)  # (rows, transition_dim)
        self.tokens[is_data] = tokens.to(dtype)
        self.in_path = step_of_row < max_path_length  # (rows,) positions that count in the loss
        # window j overall is window j - first_start[e] of its episode e, which starts at that many rows into e
        starts_per_episode = lengths - 1
        episode_of_start = torch.repeat_interleave(torch.arange(len(lengths)), starts_per_episode)
        first_start = torch.cumsum(starts_per_episode, 0) - starts_per_episode
        self.starts = first_row[episode_of_start] + torch.arange(len(episode_of_start)) - first_start[episode_of_start]
        self.offsets = torch.arange(sequence_length)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = self.starts[index].unsqueeze(-1) + self.offsets  # (..., sequence_length)
        window = self.tokens[rows].long().flatten(-2)  # (..., sequence_length * transition_dim)
        transition_dim = self.tokens.shape[1]
        mask = self.in_path[rows].repeat_interleave(transition_dim, dim=-1).float()
        return window[..., :-1], window[..., 1:], mask[..., :-1]


def token_windows(
    transitions: list[np.ndarray], discretizer: Discretizer, sequence_length: int, max_path_length: int
) -> TokenWindows:
    """Discretize per-episode transitions (T, transition_dim) and index their training windows."""
    tokens = discretizer.discretize(np.concatenate(transitions)).cpu()
    lengths = [len(rows) for rows in transitions]
    return TokenWindows(tokens, lengths, sequence_length, max_path_length, stop_token=discretizer.n_bins)
