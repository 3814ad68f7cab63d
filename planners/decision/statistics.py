"""State normalization statistics a user gives for a DT checkpoint: `--state-mean/--state-std` or a JSON file."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from seqrl import SeqrlError
from seqrl.planners.metadata import read_json


@dataclass(frozen=True)
class StateStatistics:
    """Per-dimension mean and std of the states a policy was trained on, and where they came from."""

    mean: np.ndarray  # (state_dim,) float32
    std: np.ndarray  # (state_dim,) float32
    source: str

    def checked(self, state_dim: int, what: str) -> "StateStatistics":
        """These statistics, refused unless both have `state_dim` values (the size of `what`) and stds are positive."""
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values.shape != (state_dim,):
                raise SeqrlError(
                    f"state {name} from {self.source} has {values.size} values but {what} has {state_dim}; "
                    "give one value per dimension"
                )
        if not np.isfinite(self.mean).all():
            raise SeqrlError(f"state mean from {self.source} holds NaN or infinite values; fix them")
        if not (np.isfinite(self.std) & (self.std > 0)).all():
            raise SeqrlError(f"state std from {self.source} holds values that are not positive and finite; fix them")
        return self


def given_statistics(mean: str | None, std: str | None, path: Path | None) -> StateStatistics | None:
    """The statistics of `--state-mean/--state-std` (comma-separated) or of `--state-statistics FILE`, if given."""
    if path is not None and (mean is not None or std is not None):
        raise SeqrlError("--state-mean/--state-std and --state-statistics both given; pick one")
    if path is not None:
        data = read_json(path)
        missing = [key for key in ("state_mean", "state_std") if key not in data]
        if missing:
            raise SeqrlError(
                f'{path} lacks {", ".join(missing)}; it must hold {{"state_mean": [...], "state_std": [...]}}'
            )
        mean_values = _numbers(data["state_mean"], f"{path} state_mean")
        return StateStatistics(mean_values, _numbers(data["state_std"], f"{path} state_std"), str(path))
    if mean is None and std is None:
        return None
    return StateStatistics(
        _numbers(_split(mean, "--state-mean"), "--state-mean"),
        _numbers(_split(std, "--state-std"), "--state-std"),
        "--state-mean/--state-std",
    )


def _split(text: str | None, name: str) -> list[str]:
    if text is None:
        raise SeqrlError(f"{name} is missing; --state-mean and --state-std come together")
    return [word.strip() for word in text.split(",")]


def _numbers(values: object, name: str) -> np.ndarray:
    """`values` (a list of numbers, or of number words) as a float32 array, or a one-line error naming `name`."""
    if not isinstance(values, list) or not values:
        raise SeqrlError(f"{name} must be a non-empty list of numbers")
    try:
        if any(isinstance(value, bool) for value in values):
            raise TypeError
        return np.array([float(value) for value in values], dtype=np.float32)
    except (TypeError, ValueError):
        raise SeqrlError(f"{name} must hold numbers only, e.g. 1.31,-0.08,0.5; got {values!r:.80}") from None
