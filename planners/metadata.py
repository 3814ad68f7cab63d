"""`seqrl.json`, the metadata seqrl keeps beside a checkpoint's weights: one typed class, validated when read."""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from seqrl import SeqrlError, __version__
from seqrl.agents.options import Options, option
from seqrl.planners.files import MAX_SMALL_FILE_BYTES, file_sha256, read_bounded

CONFIG_FILE = "config.json"  # Hugging Face's, read by transformers too
META_FILE = "seqrl.json"
WEIGHTS_FILE = "model.safetensors"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or a one-line error naming the file."""
    try:
        data = json.loads(read_bounded(Path(path), MAX_SMALL_FILE_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise SeqrlError(f"{path} is missing; is this a seqrl or Hugging Face checkpoint directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SeqrlError(f"{path} is not valid JSON ({error}); re-save the checkpoint") from None
    if not isinstance(data, dict):
        raise SeqrlError(f"{path} must hold a JSON object")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented JSON."""
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


@dataclass(frozen=True, kw_only=True)
class CheckpointMeta(Options):
    """What every seqrl checkpoint records: its origin, training options and results. Methods add their fields."""

    kind: str | None = option(
        None, "seqrl method that wrote the checkpoint (None: a plain Hugging Face one)", choices=("tt", "dt")
    )
    seqrl_version: str = option(__version__, "seqrl version that wrote it")
    env_id: str | None = option(None, "env the training data came from")
    datasets: list[str] = option([], "datasets trained on")
    training: dict = option({}, "the trainer's options (checked against its options class on --resume)")
    final_loss: float | None = option(None, "mean training loss of the last metrics record")
    held_out_loss: float | None = option(None, "held-out loss of the last metrics record")
    steps: int | None = option(None, "updates done", low=0)
    tokens: int | None = option(None, "tokens (or samples) trained on", low=0)
    train_time_s: float | None = option(None, "seconds spent training", low=0)
    device: str | None = option(None, "device trained on")
    weights_sha256: str | None = option(None, "SHA-256 of model.safetensors, written at save and checked at load")

    @classmethod
    def read(cls, directory: Path) -> Self:
        """The metadata in `directory`, validated; the defaults for a checkpoint without `seqrl.json`."""
        path = Path(directory) / META_FILE
        if not os.path.lexists(path):  # a dangling or looping link is read, and refused, by `read_json`
            return cls()
        return cls.from_dict(read_json(path), str(path))

    def write(self, directory: Path) -> None:
        """Write `seqrl.json` into `directory`, with the digest of the `model.safetensors` written there before it."""
        weights = Path(directory) / WEIGHTS_FILE
        digest = file_sha256(weights) if weights.exists() else None
        write_json(Path(directory) / META_FILE, {**self.to_dict(), "weights_sha256": digest})
