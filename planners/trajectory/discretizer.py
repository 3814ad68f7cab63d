"""Per-dimension bins that turn continuous transitions into Trajectory Transformer tokens and back."""

from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np
import torch
from seqrl import SeqrlError
from seqrl.planners.files import MAX_SMALL_FILE_BYTES, checked_size

DISCRETIZER_FILE = "discretizer.npz"
KINDS = ("quantile", "uniform")


class Discretizer:
    """N bins per dimension, bounded by N + 1 sorted thresholds; token i of a dimension is its i-th bin."""

    def __init__(self, thresholds: np.ndarray | torch.Tensor, kind: str) -> None:
        thresholds = torch.as_tensor(thresholds, dtype=torch.float64)
        if thresholds.ndim != 2 or len(thresholds) < 2:
            raise SeqrlError(f"discretizer thresholds must have shape (n_bins + 1, dim), got {tuple(thresholds.shape)}")
        if kind not in KINDS:
            raise SeqrlError(f"unknown discretizer kind {kind!r}; use one of {', '.join(KINDS)}")
        self.kind = kind
        self.thresholds = thresholds  # (N + 1, dim), sorted along dim 0
        self.edges = thresholds.T.contiguous()  # (dim, N + 1): the layout torch.searchsorted wants
        self.midpoints = ((thresholds[:-1] + thresholds[1:]) / 2).T.to(torch.float32).contiguous()  # (dim, N)

    @property
    def n_bins(self) -> int:
        """Number of bins (tokens) per dimension."""
        return len(self.thresholds) - 1

    @property
    def dim(self) -> int:
        """Number of dimensions covered."""
        return self.thresholds.shape[1]

    @property
    def device(self) -> torch.device:
        """Device the thresholds live on."""
        return self.thresholds.device

    @classmethod
    def fit(cls, data: np.ndarray, n_bins: int, kind: str = "quantile") -> Self:
        """Bins fitted to `data` (rows, dim): 'quantile' (equal counts, as the original) or 'uniform' (equal widths)."""
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or len(data) == 0:
            raise SeqrlError(f"cannot fit a discretizer to data of shape {data.shape}; need (rows, dim) with rows > 0")
        if n_bins < 1:
            raise SeqrlError(f"n_bins must be at least 1, got {n_bins}")
        if not np.isfinite(data).all():
            raise SeqrlError("cannot fit a discretizer to data holding NaN or infinite values; clean the dataset")
        if kind == "quantile":
            # N + 1 rows of the per-dimension sorted data at evenly spaced indices: first row = min, last = max.
            rows = np.linspace(0, len(data) - 1, n_bins + 1, dtype=int)
            return cls(np.sort(data, axis=0)[rows], kind)
        if kind == "uniform":
            return cls(np.linspace(data.min(axis=0), data.max(axis=0), n_bins + 1), kind)
        raise SeqrlError(f"unknown discretizer kind {kind!r}; use one of {', '.join(KINDS)}")

    def select(self, dims: slice | Sequence[int]) -> Self:
        """The discretizer of a subset of dimensions, e.g. `select(slice(-2, None))` for reward and value."""
        return type(self)(self.thresholds[:, dims], self.kind)

    def to(self, device: str | torch.device) -> Self:
        """The same bins on `device`."""
        return type(self)(self.thresholds.to(device), self.kind)

    def discretize(self, values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Tokens (..., dim) of values (..., dim): index of the largest threshold <= x, clipped to [0, N - 1]."""
        values = torch.as_tensor(values, device=self.device).to(torch.float64)
        if values.shape[-1:] != (self.dim,):
            raise SeqrlError(
                f"cannot discretize values of shape {tuple(values.shape)}: last dimension must be {self.dim}"
            )
        if torch.isnan(values).any():
            raise SeqrlError("cannot discretize NaN values; check the observations or the dataset")
        columns = values.reshape(-1, self.dim).T.contiguous()  # (dim, rows)
        # right=True counts thresholds <= x, so ties land in the bin that the threshold opens, as in the original.
        tokens = torch.searchsorted(self.edges, columns, right=True) - 1
        return tokens.clamp_(0, self.n_bins - 1).T.reshape(values.shape)

    def reconstruct(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bin midpoints (..., dim) float32 of tokens (..., dim); out-of-range tokens are clipped to [0, N - 1]."""
        tokens = torch.as_tensor(tokens, device=self.device).long().clamp(0, self.n_bins - 1)
        dims = torch.arange(self.dim, device=self.device)
        return self.midpoints[dims, tokens]

    def expectation(self, probs: torch.Tensor) -> torch.Tensor:
        """Mean value (..., dim) of token distributions probs (..., dim, N) over the bin midpoints."""
        return (probs * self.midpoints).sum(-1)

    def percentile(self, probs: torch.Tensor, fraction: float) -> torch.Tensor:
        """Midpoint (..., dim) of the first bin whose cumulative probability reaches `fraction`; probs (..., dim, N)."""
        reached = probs.cumsum(-1) >= fraction
        # argmax finds the first True; rounding can leave none (fraction 1.0), which means the last bin.
        first = torch.where(reached.any(-1), reached.int().argmax(-1), self.n_bins - 1)
        return self.reconstruct(first)

    def save(self, path: Path) -> None:
        """Write `thresholds` (N + 1, dim) and `kind` to an .npz file."""
        np.savez(path, thresholds=self.thresholds.cpu().numpy(), kind=np.array(self.kind))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a discretizer written by `save`, or a one-line error naming the file."""
        try:
            checked_size(path, MAX_SMALL_FILE_BYTES)
            with np.load(path, allow_pickle=False) as file:
                thresholds, kind = file["thresholds"], str(file["kind"])
        except FileNotFoundError:
            raise SeqrlError(
                f"{path} is missing; a Trajectory Transformer checkpoint needs its {DISCRETIZER_FILE}"
            ) from None
        except SeqrlError:
            raise
        except Exception as error:  # not a zip, a bare .npy, pickled objects, missing keys: numpy's advice is unsafe
            raise SeqrlError(
                f"{path} is not a valid discretizer file ({type(error).__name__}): it must hold plain arrays "
                "'thresholds' and 'kind'; re-save the checkpoint"
            ) from None
        if kind not in KINDS:
            raise SeqrlError(f"{path} names an unknown discretizer kind {kind!r}; re-save the checkpoint")
        if thresholds.ndim != 2 or len(thresholds) < 2 or not np.isfinite(thresholds).all():
            raise SeqrlError(
                f"{path} holds thresholds of shape {thresholds.shape} or non-finite values; re-save the checkpoint"
            )
        if (np.diff(thresholds, axis=0) < 0).any():
            raise SeqrlError(f"{path} holds thresholds that are not sorted; re-save the checkpoint")
        return cls(thresholds, kind)
