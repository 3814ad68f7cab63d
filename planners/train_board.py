"""TensorBoard events beside metrics.jsonl: the same scalars, by update step."""

from pathlib import Path
from typing import Any

from seqrl import SeqrlError


def open_board(directory: Path, step: int) -> Any:
    """A SummaryWriter into `directory`; a resumed run (at `step` > 0) drops the events logged after its checkpoint."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SeqrlError("--tensorboard needs the tensorboard package: pip install 'seqrl[tensorboard]'") from None
    return SummaryWriter(str(directory), purge_step=step if step > 0 else None)


def write_scalars(board: Any, record: dict[str, Any]) -> None:
    """Every numeric entry of a metrics record but its step, as a scalar at that step."""
    for name, value in record.items():
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            board.add_scalar(name, value, record["step"])
    board.flush()
