"""Trajectory Transformer discretizer: the original's quantile thresholds and bin convention, round trips, files."""

import numpy as np
import pytest
import torch
from seqrl import SeqrlError
from seqrl.planners.trajectory.discretizer import Discretizer

# Two columns of 7 rows; with N = 3 the original takes sorted rows linspace(0, 6, 4, dtype=int) = [0, 2, 4, 6].
SMALL = np.array([[5, 10], [1, 70], [4, 30], [2, 20], [3, 60], [9, 50], [7, 40]], dtype=np.float64)
SMALL_THRESHOLDS = np.array(
    [[1, 10], [3, 30], [5, 50], [9, 70]], dtype=np.float64
)  # sorted columns: 1 2 3 4 5 7 9 / 10..70


def test_quantile_thresholds_are_the_originals_sorted_rows():
    discretizer = Discretizer.fit(SMALL, n_bins=3, kind="quantile")
    np.testing.assert_array_equal(discretizer.thresholds.numpy(), SMALL_THRESHOLDS)
    assert (discretizer.n_bins, discretizer.dim, discretizer.kind) == (3, 2, "quantile")


def test_uniform_thresholds_split_each_range_evenly():
    discretizer = Discretizer.fit(SMALL, n_bins=4, kind="uniform")
    np.testing.assert_allclose(discretizer.thresholds.numpy(), [[1, 10], [3, 25], [5, 40], [7, 55], [9, 70]])


def test_discretize_takes_the_largest_threshold_at_or_below_and_clips():
    discretizer = Discretizer(SMALL_THRESHOLDS, "quantile")
    first = torch.tensor([0.0, 1.0, 2.9, 3.0, 4.99, 5.0, 8.9, 9.0, 100.0])  # thresholds 1 3 5 9
    values = torch.stack([first, torch.full_like(first, 30.0)], dim=1)
    tokens = discretizer.discretize(values)
    assert tokens.dtype == torch.int64
    # below the min -> 0; a value equal to a threshold opens that bin; the max and above -> N - 1
    assert tokens[:, 0].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert tokens[:, 1].tolist() == [1] * 9


def test_discretize_matches_the_originals_comparison_count_on_ties():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 6, size=(200, 3)).astype(np.float64)  # many repeated values: duplicate thresholds
    discretizer = Discretizer.fit(data, n_bins=8)
    thresholds = discretizer.thresholds.numpy()
    # the original: count of thresholds <= x, minus one, clipped to [0, N - 1]
    expected = np.clip((data[None] >= thresholds[:, None]).sum(0) - 1, 0, 7)
    np.testing.assert_array_equal(discretizer.discretize(data).numpy(), expected)


@pytest.mark.parametrize("kind", ["quantile", "uniform"])
def test_reconstruct_returns_midpoints_within_a_bin_width(kind):
    rng = np.random.default_rng(1)
    data = np.concatenate([rng.normal(size=(500, 1)), rng.exponential(size=(500, 1)), rng.uniform(-5, 5, (500, 1))], 1)
    discretizer = Discretizer.fit(data, n_bins=20, kind=kind)
    tokens = discretizer.discretize(data)
    recon = discretizer.reconstruct(tokens)
    assert recon.dtype == torch.float32 and recon.shape == data.shape
    thresholds = discretizer.thresholds.numpy()
    columns = np.arange(3)
    left, right = thresholds[tokens.numpy(), columns], thresholds[tokens.numpy() + 1, columns]
    np.testing.assert_allclose(recon.numpy(), (left + right) / 2, rtol=1e-6)
    assert (np.abs(recon.numpy() - data) <= (right - left) + 1e-6).all()
    # the round trip is idempotent: a midpoint maps back to its own bin
    assert torch.equal(discretizer.discretize(recon), tokens)


def test_reconstruct_clips_out_of_range_tokens():
    discretizer = Discretizer(SMALL_THRESHOLDS, "quantile")
    recon = discretizer.reconstruct(torch.tensor([[-1, 3], [7, 0]]))
    np.testing.assert_allclose(recon.numpy(), [[2, 60], [7, 20]])


def test_expectation_and_percentile_of_batched_token_distributions():
    discretizer = Discretizer(SMALL_THRESHOLDS, "quantile")  # midpoints: [2, 4, 7] and [20, 40, 60]
    probs = torch.tensor(
        [[[1.0, 0.0, 0.0], [0.25, 0.25, 0.5]], [[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]]]
    )  # (batch 2, dim 2, N 3)
    expected = [[2, 0.25 * 20 + 0.25 * 40 + 0.5 * 60], [5.5, 40]]
    np.testing.assert_allclose(discretizer.expectation(probs).numpy(), expected, rtol=1e-6)
    # least bin whose cumulative probability reaches the fraction
    np.testing.assert_allclose(discretizer.percentile(probs, 0.5).numpy(), [[2, 40], [4, 40]])
    np.testing.assert_allclose(discretizer.percentile(probs, 0.6).numpy(), [[2, 60], [7, 40]])
    np.testing.assert_allclose(discretizer.percentile(probs, 1.0).numpy(), [[2, 60], [7, 60]])


def test_select_covers_a_subset_of_dimensions():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(300, 5))
    discretizer = Discretizer.fit(data, n_bins=10)
    reward_value = discretizer.select(slice(-2, None))
    assert reward_value.dim == 2
    assert torch.equal(reward_value.discretize(data[:, -2:]), discretizer.discretize(data)[:, -2:])
    tokens = discretizer.discretize(data)
    assert torch.equal(
        discretizer.select([0, 3]).reconstruct(tokens[:, [0, 3]]), discretizer.reconstruct(tokens)[:, [0, 3]]
    )
    # a single dimension takes plain (batch, N) distributions
    probs = torch.softmax(torch.randn(4, 10), -1)
    single = discretizer.select([4]).expectation(probs)
    np.testing.assert_allclose(single.numpy(), (probs * discretizer.midpoints[4]).sum(-1).numpy(), rtol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    discretizer = Discretizer.fit(np.random.default_rng(3).normal(size=(100, 4)), n_bins=7, kind="uniform")
    discretizer.save(tmp_path / "discretizer.npz")
    with np.load(tmp_path / "discretizer.npz") as file:
        assert file["thresholds"].shape == (8, 4)
    loaded = Discretizer.load(tmp_path / "discretizer.npz")
    assert torch.equal(loaded.thresholds, discretizer.thresholds) and loaded.kind == "uniform"


def test_bad_discretizer_files_give_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    no_thresholds = tmp_path / "empty.npz"
    np.savez(no_thresholds, kind=np.array("quantile"))
    unsorted = tmp_path / "unsorted.npz"
    np.savez(unsorted, thresholds=np.array([[0.0], [2.0], [1.0]]), kind=np.array("quantile"))
    unknown = tmp_path / "unknown.npz"
    np.savez(unknown, thresholds=np.array([[0.0], [1.0]]), kind=np.array("log"))
    for path in (tmp_path / "missing.npz", garbage, no_thresholds, unsorted, unknown):
        with pytest.raises(SeqrlError) as error:
            Discretizer.load(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_bad_inputs_give_one_line_errors():
    discretizer = Discretizer(SMALL_THRESHOLDS, "quantile")
    with pytest.raises(SeqrlError, match="NaN"):
        discretizer.discretize(np.array([[np.nan, 1.0]]))
    with pytest.raises(SeqrlError, match="last dimension must be 2"):
        discretizer.discretize(np.zeros((4, 3)))
    with pytest.raises(SeqrlError, match="NaN or infinite"):
        Discretizer.fit(np.array([[0.0], [np.inf]]), n_bins=2)
    with pytest.raises(SeqrlError, match="unknown discretizer kind"):
        Discretizer.fit(SMALL, n_bins=2, kind="log")
