"""What a checkpoint directory holds: kind, env, dimensions, size, data and training results, for `seqrl info`."""

from pathlib import Path

import torch
from seqrl.planners.checkpoint import file_digest, recover_interrupted_save, resolve_checkpoint, weights_file
from seqrl.planners.metadata import CONFIG_FILE, read_json
from seqrl.planners.registry import method_of


def describe_checkpoint(path_or_id: str | Path) -> list[tuple[str, str]]:
    """(field, value) rows describing a seqrl or plain Hugging Face TT/DT checkpoint, or a one-line error."""
    recover_interrupted_save(Path(path_or_id))
    directory = resolve_checkpoint(path_or_id)
    method = method_of(directory)
    model_class = method.model_class()
    config = model_class.config_class.from_dict(read_json(directory / CONFIG_FILE), str(directory / CONFIG_FILE))
    weights = weights_file(directory)
    meta = method.meta.read(directory)
    model_class.check_weights(directory, config)  # a truncated, corrupted or mislabelled file is an error here
    with torch.device("meta"):  # shapes only: counting parameters allocates nothing
        parameters = sum(p.numel() for p in model_class(config).parameters())

    origin = f"seqrl, {meta.kind.upper()}" if meta.kind else "plain Hugging Face"
    rows = [
        ("checkpoint", str(directory)),
        ("kind", f"{method.title} ({origin})"),
        ("env", meta.env_id or "not recorded"),
        ("datasets", ", ".join(meta.datasets) or "not recorded"),
        *method.code().info_rows(directory, config, meta),
        ("parameters", f"{parameters:,}"),
        ("weights", f"{weights.name} ({weights.stat().st_size / 1e6:.1f} MB, sha256 {file_digest(weights)})"),
    ]
    if meta.steps is not None:
        rows.append(("training", f"{meta.steps:,} steps, {meta.tokens or 0:,} tokens"))
    if meta.final_loss is not None:
        rows.append(("loss", f"train {number(meta.final_loss)}, held-out {number(meta.held_out_loss)}"))
    return rows


def number(value: float | None) -> str:
    """A loss for display."""
    return "-" if value is None else f"{value:.4f}"
