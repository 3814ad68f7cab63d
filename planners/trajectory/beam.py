"""Beam search over Trajectory Transformer tokens: the original `beam_plan`, for several envs at once.

Rows of every tensor are grouped by env (slot-major): slot s owns rows [s * n, (s + 1) * n), where n is
the current number of beams per slot. Each slot samples from its own generator, in the same order as a
single-env search, so a batch of envs plans exactly as the envs would one by one.
"""

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from seqrl.planners.trajectory.options import PlannerSettings


class Decoder(Protocol):
    """What the search needs from the model: next-token logits for the beams, told when beams move."""

    def logits(self, sequences: torch.Tensor) -> torch.Tensor:
        """Logits (rows, vocab_size + 1) of the token after each row of sequences (rows, length)."""

    def select(self, rows: torch.Tensor) -> None:
        """Beams were re-indexed: row i now continues old row rows[i]."""


def filter_cdf(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """The original's filter: logits of the least likely tokens, up to `threshold` of the mass, become -1000."""
    probs = logits.softmax(-1)
    ascending = probs.sort(-1).values
    below = (ascending.cumsum(-1) < threshold).sum(-1, keepdim=True)  # how many smallest stay under the threshold
    cutoff = ascending.gather(-1, (below - 1).clamp(min=0))  # the largest of them (the smallest when none)
    return logits.masked_fill(probs <= cutoff, -1000.0)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Logits outside the k largest of each row become -inf (ties with the k-th are kept)."""
    kth = logits.topk(k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample_tokens(
    decoder: Decoder,
    sequences: torch.Tensor,
    count: int,
    top_k: int | None,
    cdf: float | None,
    generators: Sequence[torch.Generator],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Append `count` sampled tokens to sequences (rows, length); also their unfiltered logits, each (rows, V + 1)."""
    unfiltered = []
    for _ in range(count):
        logits = decoder.logits(sequences)
        unfiltered.append(logits)
        if cdf is not None:
            logits = filter_cdf(logits, cdf)
        if top_k is not None:
            logits = filter_top_k(logits, top_k)
        per_slot = logits.softmax(-1).chunk(len(generators))
        tokens = [torch.multinomial(p, 1, generator=generator) for p, generator in zip(per_slot, generators)]
        sequences = torch.cat((sequences, torch.cat(tokens)), dim=1)
    return sequences, unfiltered


@torch.inference_mode()
def beam_plan(
    decoder: Decoder,
    prefixes: torch.Tensor,
    generators: Sequence[torch.Generator],
    reward_and_value: Callable[[torch.Tensor], torch.Tensor],
    settings: PlannerSettings,
    observation_dim: int,
    action_dim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best plan (slots, horizon, transition_dim) of tokens and its value (slots,) from each prefix (slots, length)."""
    # reward_and_value: unfiltered probs (rows, 2, vocab_size + 1) of a reward and a value token -> estimates (rows, 2);
    # a candidate scores sum_t discount^t r_t + discount^(t+1) V_t after step t, as the original's `values`
    slots, beams, horizon = len(prefixes), settings.beam_width, settings.horizon
    device = prefixes.device
    transition_dim = observation_dim + action_dim + 2

    def regather(rows: torch.Tensor) -> None:  # re-index the beams everywhere: rows (new rows,) of old ones
        nonlocal sequences, rewards
        sequences, rewards = sequences[rows], rewards[rows]
        decoder.select(rows)

    sequences = prefixes
    rewards = torch.zeros(slots, horizon + 1, device=device)  # (rows, horizon + 1): r_0 .. r_t, then V
    discounts = settings.discount ** torch.arange(horizon + 1, device=device, dtype=torch.float32)
    regather(torch.arange(slots, device=device).repeat_interleave(beams))  # every beam starts from the prefix
    for t in range(horizon):
        # n_expand copies of each slot's beams, copy-major as the original's `repeat`: (slots, n_expand * beams)
        copies = (
            torch.arange(slots * beams, device=device).view(slots, 1, beams).expand(slots, settings.n_expand, beams)
        )
        regather(copies.flatten())
        sequences, _ = sample_tokens(decoder, sequences, action_dim, settings.k_act, settings.cdf_act, generators)
        sequences, logits = sample_tokens(decoder, sequences, 2, 1, None, generators)
        rewards[:, t : t + 2] = reward_and_value(torch.stack(logits, dim=1).softmax(-1))
        values = (rewards * discounts).sum(-1).view(slots, -1)  # (slots, n_expand * beams)
        values, best = values.topk(beams, dim=-1)  # (slots, beams), best first
        first_row = torch.arange(slots, device=device)[:, None] * settings.n_expand * beams
        regather((best + first_row).flatten())
        if t < horizon - 1:
            sequences, _ = sample_tokens(
                decoder, sequences, observation_dim, settings.k_obs, settings.cdf_obs, generators
            )
    plans = sequences.view(slots, beams, -1, transition_dim)[:, :, -horizon:]  # (slots, beams, horizon, transition_dim)
    slot, top = torch.arange(slots, device=device), values.argmax(-1)
    return plans[slot, top], values[slot, top]
