"""Return-conditioned control with a Decision Transformer: every env slot keeps a rolling K-step history."""

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from seqrl import SeqrlError
from seqrl.agents.base import Agent
from seqrl.envs.families import dt_target_return
from seqrl.envs.make import env_identity
from seqrl.planners.checkpoint import file_digest, weights_file
from seqrl.planners.decision.config import DecisionTransformerConfig
from seqrl.planners.decision.model import DecisionTransformerModel
from seqrl.planners.decision.options import DecisionMeta, PolicySettings
from seqrl.planners.decision.published import published_meta
from seqrl.planners.decision.statistics import StateStatistics
from seqrl.planners.metadata import META_FILE
from seqrl.planners.registry import AgentSource


class DecisionTransformerPolicy(Agent):
    """Acts for many env slots at once: one forward over all slots' left-padded K-step histories per step."""

    name = "dt"

    def __init__(
        self,
        model: DecisionTransformerModel,
        state_mean: np.ndarray,
        state_std: np.ndarray,
        action_space: gym.spaces.Box,
        settings: PolicySettings,
        info: dict[str, Any] | None = None,
    ):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.state_mean = torch.as_tensor(state_mean, dtype=torch.float32, device=self.device)
        self.state_std = torch.as_tensor(state_std, dtype=torch.float32, device=self.device)
        self.low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        self.action_dtype = action_space.dtype
        if settings.target_return is None:
            raise SeqrlError("the policy needs a target return; pass --target-return")
        self.target_return = settings.target_return
        self.context_length = settings.context_length
        self.return_scale = settings.return_scale
        self.info = info or {}
        self.max_timestep = model.config.max_ep_len - 1
        K = settings.context_length
        self.shapes = {  # per slot: the last K steps, oldest first, left-padded while the episode is younger than K
            "states": ((K, model.config.state_dim), torch.float32),
            "actions": ((K, model.config.act_dim), torch.float32),
            "returns": ((K, 1), torch.float32),  # scaled return-to-go
            "timesteps": ((K,), torch.long),
            "mask": ((K,), torch.long),  # 1 for real steps, 0 for padding
        }
        self.history = {
            name: torch.zeros((0, *shape), dtype=dtype, device=self.device)
            for name, (shape, dtype) in self.shapes.items()
        }
        self.return_to_go = np.zeros(0)  # unscaled, per slot
        self.step = np.zeros(0, dtype=np.int64)
        self.started = np.zeros(0, dtype=bool)

    def _grow(self, slots: int) -> None:
        """Add empty history buffers up to `slots` slots, keeping what the others hold."""
        extra = slots - len(self.step)
        for name, (shape, dtype) in self.shapes.items():
            padding = torch.zeros((extra, *shape), dtype=dtype, device=self.device)
            self.history[name] = torch.cat([self.history[name], padding])
        self.return_to_go = np.concatenate([self.return_to_go, np.zeros(extra)])
        self.step = np.concatenate([self.step, np.zeros(extra, dtype=np.int64)])
        self.started = np.concatenate([self.started, np.zeros(extra, dtype=bool)])

    def reset(self, seed: int | None = None, slot: int = 0) -> None:
        """Empty `slot`'s history and restart its return-to-go at the target (deterministic: `seed` is unused)."""
        if slot >= len(self.step):
            self._grow(slot + 1)
        for buffer in self.history.values():
            buffer[slot] = 0
        self.return_to_go[slot] = self.target_return
        self.step[slot] = 0
        self.started[slot] = True

    @torch.inference_mode()
    def act_batch(self, observations: np.ndarray, slots: Sequence[int]) -> np.ndarray:
        """Append each slot's observation to its history and predict all slots' actions in one forward."""
        slots = list(slots)
        if not all(slot < len(self.started) and self.started[slot] for slot in slots):
            raise SeqrlError(f"act called on slots {slots} before reset; call reset(slot=...) at each episode start")
        observations = np.asarray(observations, dtype=np.float64)
        state_dim = self.model.config.state_dim
        if observations.shape != (len(slots), state_dim):
            raise SeqrlError(
                f"policy got observations of shape {observations.shape} for {len(slots)} slot(s); "
                f"expected ({len(slots)}, {state_dim})"
            )
        if not np.isfinite(observations).all():
            raise SeqrlError(f"policy got a non-finite observation in slot(s) {slots}; fix the env or its wrapper")
        index = torch.as_tensor(slots, device=self.device)
        observations = torch.as_tensor(observations, dtype=torch.float32, device=self.device)
        returns = torch.as_tensor(self.return_to_go[slots] / self.return_scale, dtype=torch.float32, device=self.device)
        timesteps = torch.as_tensor(np.minimum(self.step[slots], self.max_timestep), device=self.device)
        newest = {  # what enters each slot's history on the right, the oldest step dropping off the left
            "states": (observations - self.state_mean) / self.state_std,
            "actions": 0.0,  # until predicted; the model does not read this step's action
            "returns": returns[:, None],
            "timesteps": timesteps,
            "mask": 1,
        }
        window = {}
        for name, value in newest.items():
            window[name] = self.history[name][index].roll(-1, dims=1)  # (N, K, ...)
            window[name][:, -1] = value
            self.history[name][index] = window[name]
        predicted = self.model.last_action(
            window["states"], window["actions"], window["returns"], window["timesteps"], window["mask"]
        )  # (N, act_dim)
        if not torch.isfinite(predicted).all():  # the clamp below would pass NaN on to the env
            raise SeqrlError(
                f"the DT predicted a non-finite action for slot(s) {slots}; its weights or settings "
                f"(target return {self.target_return}, return scale {self.return_scale}) are broken"
            )
        actions = torch.maximum(torch.minimum(predicted, self.high), self.low)
        self.history["actions"][index, -1] = actions
        return actions.cpu().numpy().astype(self.action_dtype)

    def observe_batch(self, rewards: np.ndarray, slots: Sequence[int]) -> None:
        """Subtract each reward from its slot's return-to-go and advance the slot's timestep."""
        self.return_to_go[list(slots)] -= np.asarray(rewards, dtype=np.float64)
        self.step[list(slots)] += 1

    def settings(self) -> dict[str, Any]:
        """Effective policy settings plus where the model came from."""
        return {
            "agent": self.name,
            "target_return": self.target_return,
            "context_length": self.context_length,
            "return_scale": self.return_scale,
            "device": str(self.device),
            **self.info,
        }


def load_agent(source: AgentSource) -> DecisionTransformerPolicy:
    """The DT policy of a loaded seqrl or plain Hugging Face checkpoint; its settings override the checkpoint's."""
    model, config = source.model, source.model.config
    env_id, _, action_space = env_identity(source.env)
    meta, published = published_meta(source.meta, source.hub_id)  # a public checkpoint: its authors' numbers
    env_id = env_id or meta.env_id
    statistics = state_statistics(source.directory, meta, published, source.statistics, source.dataset)
    statistics = statistics.checked(config.state_dim, f"{env_id or 'the env'}'s observation")
    policy_settings = policy_defaults(source.directory, meta, env_id, source.settings)
    if 3 * policy_settings.context_length > config.n_positions:
        raise SeqrlError(
            f"context length {policy_settings.context_length} is over n_positions/3 = "
            f"{config.n_positions // 3}; lower it"
        )
    info = {
        "checkpoint": str(source.directory),
        "checkpoint_digest": file_digest(weights_file(source.directory)),
        "state_statistics": statistics.source,
    }
    return DecisionTransformerPolicy(
        model.to(source.device), statistics.mean, statistics.std, action_space, policy_settings, info
    )


def policy_defaults(
    directory: Path, meta: DecisionMeta, env_id: str | None, settings: dict[str, Any]
) -> PolicySettings:
    """The defaults < seqrl.json's "policy" block < `settings`; an unset target return is the paper's for the env."""
    stored = PolicySettings.from_dict(meta.policy, f"{directory / META_FILE} policy")
    policy_settings = dataclasses.replace(stored, **settings)
    if policy_settings.target_return is None:
        target = dt_target_return(env_id)
        if target is None:
            raise SeqrlError(f"no default target return for {env_id}; pass --target-return")
        policy_settings = dataclasses.replace(policy_settings, target_return=target)
    return policy_settings


def state_statistics(
    directory: Path, meta: DecisionMeta, published: str | None, given: StateStatistics | None, dataset: str | None
) -> StateStatistics:
    """The `given` statistics, else those in `meta` (seqrl.json's, or those `published` there), else `dataset`'s."""
    if given is not None:
        return given
    if meta.state_mean is not None and meta.state_std is not None:
        where = f"published at {published}" if published else str(directory / META_FILE)
        return StateStatistics(np.asarray(meta.state_mean, np.float32), np.asarray(meta.state_std, np.float32), where)
    if dataset is not None:
        from seqrl.envs.datasets import load_dataset

        data = load_dataset(dataset)
        mean, std = data.observation_mean.astype(np.float32), data.observation_std.astype(np.float32)
        return StateStatistics(mean, std, dataset)
    raise SeqrlError(
        f"{directory} stores no state normalization statistics (a plain Hugging Face checkpoint?); "
        "pass --state-mean/--state-std, --state-statistics FILE.json or --dataset with the model's training data"
    )


def info_rows(directory: Path, config: DecisionTransformerConfig, meta: DecisionMeta) -> list[tuple[str, str]]:
    """`seqrl info` rows of a DT: dimensions, state normalization, return conditioning and architecture."""
    defaults = PolicySettings()
    policy = {**defaults.to_dict(), **meta.policy}
    target = "paper default for the env" if policy["target_return"] is None else str(policy["target_return"])
    return [
        ("dimensions", f"state {config.state_dim}, action {config.act_dim}, max episode length {config.max_ep_len}"),
        (
            "state statistics",
            "stored"
            if meta.state_mean is not None
            else "missing: pass --state-mean/--state-std, --state-statistics or --dataset",
        ),
        ("target return", target),
        ("return scale", str(policy["return_scale"])),
        ("context length", str(policy["context_length"])),
        ("architecture", f"n_layer {config.n_layer}, n_head {config.n_head}, hidden_size {config.hidden_size}"),
    ]
