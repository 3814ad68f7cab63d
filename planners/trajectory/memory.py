"""How much memory a beam search needs, estimated from its settings, and a refusal of what cannot fit."""

from pathlib import Path

import torch
from seqrl import SeqrlError
from seqrl.planners.trajectory.config import TrajectoryTransformerConfig
from seqrl.planners.trajectory.options import PlannerSettings


def search_bytes(
    config: TrajectoryTransformerConfig,
    settings: PlannerSettings,
    slots: int,
    max_tokens: int,
    cached: bool,
    itemsize: int,
) -> int:
    """Bytes a search over `slots` envs holds at its peak: per beam, its cache, a window's activations, logits."""
    rows = slots * settings.n_expand * settings.beam_width
    width = config.n_embd
    cache = 2 * config.n_layer * max_tokens * width if cached else 0
    activations = max_tokens * (8 * width + config.n_head * max_tokens)  # hidden 4x, q/k/v, residual, attention scores
    logits = 8 * (config.vocab_size + 1)  # softmax, filters, sorting
    tokens = 8 * (max_tokens + settings.horizon * config.transition_dim)  # int64 sequences
    return rows * ((cache + activations + logits) * itemsize + tokens)


def available_bytes(device: torch.device) -> int:
    """Memory free for the search on `device`: the GPU's free memory, or the system's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        line = next(line for line in meminfo.read_text().splitlines() if line.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    return torch.iinfo(torch.int64).max  # no figure to check against


def check_search_memory(
    config: TrajectoryTransformerConfig,
    settings: PlannerSettings,
    slots: int,
    max_tokens: int,
    cached: bool,
    device: torch.device,
    itemsize: int,
) -> None:
    """Refuse, with a one-line error, a search whose estimated memory exceeds what `device` has free."""
    needed = search_bytes(config, settings, slots, max_tokens, cached, itemsize)
    free = available_bytes(device)
    if needed > free:
        envs = f"{slots} env{'s' if slots > 1 else ''}"
        raise SeqrlError(
            f"a search over {envs} at beam width {settings.beam_width} x n_expand {settings.n_expand} needs about "
            f"{needed / 1e9:,.1f} GB but {device} has {free / 1e9:,.1f} GB free; lower --beam-width or --n-expand"
            + (" or plan fewer envs at once" if slots > 1 else "")
        )
