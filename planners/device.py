"""Where models run: the torch device a `--device` value names, and the CPU threads torch uses."""

import torch
from seqrl import SeqrlError


def resolve_device(name: str) -> torch.device:
    """The torch device for `--device`: 'auto' picks CUDA when available; an unusable device is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SeqrlError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SeqrlError(f"--device {name} asked for CUDA but torch sees no GPU here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise SeqrlError(f"--device {name} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def set_threads(threads: int | None) -> None:
    """Use `threads` CPU threads for torch's operators (None: leave torch's choice)."""
    if threads is not None:
        torch.set_num_threads(threads)
