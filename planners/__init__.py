"""Sequence-model planners and policies; `load_agent` turns any checkpoint into an agent."""

from pathlib import Path
from typing import Any

import gymnasium as gym

from seqrl import SeqrlError
from seqrl.agents.base import Agent
from seqrl.planners.checkpoint import CONFIG_FILE, read_json, resolve_checkpoint


def load_agent(
    checkpoint: str | Path, env: gym.Env, dataset: str | None = None, device: str = "cpu", **options: Any
) -> Agent:
    """The agent a checkpoint directory (or hub id) defines, checked against `env`; `options` override its defaults."""
    directory = resolve_checkpoint(checkpoint)
    model_type = read_json(directory / CONFIG_FILE).get("model_type")
    if model_type == "trajectory_transformer":
        from seqrl.planners.trajectory.planner import load_agent as load
    elif model_type == "decision_transformer":
        from seqrl.planners.decision.policy import load_agent as load
    else:
        raise SeqrlError(
            f"{directory / CONFIG_FILE} has model_type {model_type!r}; seqrl runs "
            "'trajectory_transformer' and 'decision_transformer' checkpoints"
        )
    return load(directory, env, dataset=dataset, device=device, **options)
