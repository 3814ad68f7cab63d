"""Statistics of a sweep's episode scores: mean, IQM with a bootstrap interval, worst five-seed mean."""

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
WORST_WINDOW = 5  # consecutive seeds in the worst-window mean


def iqm(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% of the scores (Agarwal et al. 2021)."""
    from scipy.stats import trim_mean  # scipy.stats takes over a second to import: only when a table is made

    return trim_mean(scores, 0.25, axis=axis)


def iqm_interval(scores: np.ndarray, confidence: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the IQM (None under two episodes); the same seed gives the same interval.

    One env is one task, so the stratified bootstrap of Agarwal et al. resamples the episodes of that task.
    """
    from scipy.stats import bootstrap

    if len(scores) < 2:
        return None
    result = bootstrap(
        (np.asarray(scores, dtype=np.float64),),
        iqm,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def worst_window_mean(scores_in_seed_order: np.ndarray, window: int = WORST_WINDOW) -> float | None:
    """The lowest mean over `window` consecutive seeds, or None with fewer episodes than that."""
    scores = np.asarray(scores_in_seed_order, dtype=np.float64)
    if len(scores) < window:
        return None
    return float(np.convolve(scores, np.ones(window) / window, mode="valid").min())


@dataclass(frozen=True)
class ScoreSummary:
    """What a cell of a sweep scored over its episodes."""

    episodes: int
    mean: float
    std: float
    iqm: float
    iqm_low: float | None  # 95% bootstrap interval of the IQM (None under two episodes)
    iqm_high: float | None
    worst_window_mean: float | None
    mean_length: float


def summarize_scores(scores_in_seed_order: list[float], lengths: list[int]) -> ScoreSummary:
    """Summary statistics of one cell's episode scores, given in seed order."""
    scores = np.asarray(scores_in_seed_order, dtype=np.float64)
    interval = iqm_interval(scores)
    return ScoreSummary(
        episodes=len(scores),
        mean=float(scores.mean()),
        std=float(scores.std()),
        iqm=float(iqm(scores)),
        iqm_low=None if interval is None else interval[0],
        iqm_high=None if interval is None else interval[1],
        worst_window_mean=worst_window_mean(scores),
        mean_length=float(np.mean(lengths)),
    )
