"""seqrl: planning and control agents for offline RL with sequence models."""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"


class SeqrlError(Exception):
    """A user-facing error: its message names the problem and the fix, on one line."""


# Model classes load lazily so that `import seqrl` (and the CLI's start-up) stays cheap.
_LAZY = {
    "TrajectoryTransformerConfig": "seqrl.planners.trajectory.config",
    "TrajectoryTransformerModel": "seqrl.planners.trajectory.model",
    "DecisionTransformerConfig": "seqrl.planners.decision.config",
    "DecisionTransformerModel": "seqrl.planners.decision.model",
    "DecisionTransformerGPT2Model": "seqrl.planners.decision.model",
}

__all__ = ["SeqrlError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seqrl' has no attribute {name!r}")
