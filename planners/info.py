"""What a checkpoint directory holds: kind, env, dimensions, size, data and training results, for `seqrl info`."""

from pathlib import Path
from typing import Any

import torch

from seqrl import SeqrlError
from seqrl.planners.checkpoint import (
    CONFIG_FILE,
    META_FILE,
    file_digest,
    read_json,
    resolve_checkpoint,
    weights_file,
)

MODEL_NAMES = {"trajectory_transformer": "Trajectory Transformer", "decision_transformer": "Decision Transformer"}


def describe_checkpoint(path_or_id: str | Path) -> list[tuple[str, str]]:
    """(field, value) rows describing a seqrl or plain Hugging Face TT/DT checkpoint, or a one-line error."""
    directory = resolve_checkpoint(path_or_id)
    raw_config = read_json(directory / CONFIG_FILE)
    model_type = raw_config.get("model_type")
    if model_type not in MODEL_NAMES:
        known = " and ".join(MODEL_NAMES)
        raise SeqrlError(f"{directory / CONFIG_FILE} has model_type {model_type!r}; seqrl reads {known} checkpoints")
    weights = weights_file(directory)
    meta = read_json(directory / META_FILE) if (directory / META_FILE).exists() else {}
    if model_type == "trajectory_transformer":
        from seqrl import TrajectoryTransformerConfig as config_class, TrajectoryTransformerModel as model_class
    else:
        from seqrl import DecisionTransformerConfig as config_class, DecisionTransformerModel as model_class
    config = config_class.from_dict(raw_config)
    with torch.device("meta"):  # shapes only: counting parameters allocates nothing
        parameters = sum(p.numel() for p in model_class(config).parameters())

    origin = f"seqrl, {meta['kind'].upper()}" if "kind" in meta else "plain Hugging Face"
    rows = [
        ("checkpoint", str(directory)),
        ("kind", f"{MODEL_NAMES[model_type]} ({origin})"),
        ("env", meta.get("env_id") or "not recorded"),
        ("datasets", ", ".join(meta.get("datasets", [])) or "not recorded"),
    ]
    if model_type == "trajectory_transformer":
        rows += trajectory_rows(directory, config, meta)
    else:
        rows += decision_rows(config, meta)
    rows += [
        ("architecture", f"n_layer {config.n_layer}, n_head {config.n_head}, {width(config)}"),
        ("parameters", f"{parameters:,}"),
        ("weights", f"{weights.name} ({weights.stat().st_size / 1e6:.1f} MB, sha256 {file_digest(weights)})"),
    ]
    if "steps" in meta:
        rows.append(("training", f"{meta['steps']:,} steps, {meta.get('tokens') or 0:,} tokens"))
    if "final_loss" in meta:
        rows.append(("loss", f"train {number(meta['final_loss'])}, held-out {number(meta.get('held_out_loss'))}"))
    return rows


def trajectory_rows(directory: Path, config: Any, meta: dict[str, Any]) -> list[tuple[str, str]]:
    """TT rows: dimensions, tokenization and value discount."""
    discretizer = directory / "discretizer.npz"
    kind = meta.get("discretizer", "unknown kind")
    return [
        ("dimensions", f"observation {config.observation_dim}, action {config.action_dim}, transition {config.transition_dim}"),
        ("tokens", f"{config.vocab_size} bins per dimension, block size {config.block_size}"),
        ("discretizer", f"{kind} ({discretizer.name})" if discretizer.exists() else "missing: pass --dataset to build one"),
        ("discount", str(meta.get("discount", "not recorded"))),
    ]


def decision_rows(config: Any, meta: dict[str, Any]) -> list[tuple[str, str]]:
    """DT rows: dimensions, state normalization and return conditioning."""
    policy = meta.get("policy", {})
    has_statistics = "state_mean" in meta and "state_std" in meta
    return [
        ("dimensions", f"state {config.state_dim}, action {config.act_dim}, max episode length {config.max_ep_len}"),
        ("state statistics", "stored" if has_statistics else "missing: pass --dataset at rollout"),
        ("target return", str(policy.get("target_return", "paper default for the env"))),
        ("return scale", str(policy.get("return_scale", "default"))),
        ("context length", str(policy.get("context_length", "default"))),
    ]


def width(config: Any) -> str:
    """Embedding width of a TT (n_embd) or DT (hidden_size) config, named."""
    return f"n_embd {config.n_embd}" if hasattr(config, "n_embd") else f"hidden_size {config.hidden_size}"


def number(value: float | None) -> str:
    """A loss for display."""
    return "-" if value is None else f"{value:.4f}"
