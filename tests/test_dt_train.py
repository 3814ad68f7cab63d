"""`seqrl train dt`: lowers the loss, writes a complete checkpoint, resumes exactly."""

import json
import pickle
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file
from seqrl import DecisionTransformerModel
from seqrl.envs.datasets import Episode
from seqrl.planners.decision.data import episode_steps, sample_windows

TINY = [
    "--batch-size",
    "16",
    "--context-length",
    "5",
    "--hidden-size",
    "16",
    "--n-layer",
    "1",
    "--warmup-steps",
    "2",
    "--lr",
    "3e-3",
    "--eval-every",
    "10",
    "--save-every",
    "20",
    "--holdout",
    "0.2",
    "--threads",
    "1",
    "--device",
    "cpu",
    "--quiet",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """A DT pickle whose actions are a fixed smooth function of the observations."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, 2))
    episodes = []
    for length in rng.integers(20, 60, size=12):
        observations = rng.normal(size=(length, 4)) * 3.0 + 1.0
        episodes.append(
            {
                "observations": observations,
                "actions": np.tanh(observations @ weights * 0.3),
                "rewards": rng.uniform(0, 2, size=length),
                "terminals": np.zeros(length, dtype=bool),
            }
        )
    path = tmp_path_factory.mktemp("data") / "tiny.pkl"
    with open(path, "wb") as file:
        pickle.dump(episodes, file)
    return str(path)


@pytest.fixture(scope="module")
def train(run_seqrl):
    """Run the installed `seqrl train dt` command with the tiny model."""

    def run(dataset: str, out, steps: int, *extra: str) -> subprocess.CompletedProcess:
        return run_seqrl("train", "dt", "--dataset", dataset, "--out", out, "--steps", steps, *TINY, *extra)

    return run


def records(out) -> list[dict]:
    """The metrics.jsonl records of a run."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_windows_are_left_padded_slices_with_returns_to_go():
    lengths = [30, 3]
    episodes = [
        Episode(
            observations=np.arange(n, dtype=np.float32)[:, None] + 100 * e,
            actions=np.zeros((n, 1), np.float32),
            rewards=np.arange(1, n + 1, dtype=np.float32),
            terminations=np.zeros(n, bool),
            truncations=np.zeros(n, bool),
        )
        for e, n in enumerate(lengths)
    ]
    steps = episode_steps(episodes, np.zeros(1, np.float32), np.ones(1, np.float32), return_scale=10.0, max_ep_len=20)
    states, _, returns, timesteps, mask = (t.numpy() for t in sample_windows(steps, 4000, 5, np.random.default_rng(0)))
    from_second = states[:, -1, 0] >= 100
    assert abs(from_second.mean() - 3 / 33) < 0.02  # episodes drawn in proportion to their length
    for state, ret, time, real in zip(states[:200, :, 0], returns[:200, :, 0], timesteps[:200], mask[:200]):
        n = int(real.sum())
        assert real.tolist() == [0] * (5 - n) + [1] * n  # left padding only
        episode = int(state[-1] >= 100)
        t = (state[5 - n :] - 100 * episode).astype(int)
        assert (t == t[0] + np.arange(n)).all()  # consecutive steps of one episode
        assert n == 5 or t[-1] == lengths[episode] - 1  # short windows reach the episode's end
        rewards = np.arange(1, lengths[episode] + 1)
        np.testing.assert_allclose(ret[5 - n :], [rewards[i:].sum() / 10.0 for i in t], rtol=1e-6)
        assert time[5 - n :].tolist() == np.minimum(t, 19).tolist()


def test_training_lowers_loss_and_resumes_exactly(dataset, tmp_path, train):
    straight = train(dataset, tmp_path / "straight", 40)
    assert straight.returncode == 0, straight.stderr
    metrics = records(tmp_path / "straight")
    assert [m["step"] for m in metrics] == [10, 20, 30, 40]
    assert metrics[-1]["train_loss"] < 0.7 * metrics[0]["train_loss"]
    assert metrics[-1]["held_out_loss"] < metrics[0]["held_out_loss"]

    meta = json.loads((tmp_path / "straight" / "seqrl.json").read_text())
    assert meta["kind"] == "dt" and meta["datasets"] == [dataset]
    assert len(meta["state_mean"]) == len(meta["state_std"]) == 4
    assert meta["policy"]["context_length"] == 5 and meta["policy"]["return_scale"] == 1000.0
    assert meta["final_loss"] == pytest.approx(metrics[-1]["train_loss"])
    model = DecisionTransformerModel.from_pretrained(tmp_path / "straight")
    assert (model.config.state_dim, model.config.act_dim, model.config.hidden_size) == (4, 2, 16)

    first = train(dataset, tmp_path / "resumed", 20)
    assert first.returncode == 0, first.stderr
    second = train(dataset, tmp_path / "resumed", 40, "--resume")
    assert second.returncode == 0, second.stderr
    assert records(tmp_path / "resumed") == [
        {**m, "elapsed": r["elapsed"]} for m, r in zip(metrics, records(tmp_path / "resumed"))
    ]
    resumed, reference = (
        load_file(tmp_path / "resumed" / "model.safetensors"),
        load_file(tmp_path / "straight" / "model.safetensors"),
    )
    for name, tensor in reference.items():
        np.testing.assert_array_equal(resumed[name], tensor, err_msg=name)


def test_resume_with_changed_options_is_refused(dataset, tmp_path, train):
    assert train(dataset, tmp_path / "run", 10).returncode == 0
    changed = train(dataset, tmp_path / "run", 20, "--resume", "--hidden-size", "32")
    assert changed.returncode == 1
    assert changed.stderr.strip().startswith("error:") and "--hidden-size" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1
    again = train(dataset, tmp_path / "run", 10)
    assert again.returncode == 1 and "--resume" in again.stderr


def test_decay_steps_anneals_the_learning_rate_to_zero(dataset, tmp_path, train):
    decayed = train(dataset, tmp_path / "decayed", 40, "--decay-steps", "40")
    assert decayed.returncode == 0, decayed.stderr
    rates = [m["lr"] for m in records(tmp_path / "decayed")]
    assert all(later < earlier for earlier, later in zip(rates, rates[1:])) and rates[0] < 3e-3
    assert rates[-1] == pytest.approx(0.0, abs=1e-9)
    assert train(dataset, tmp_path / "flat", 20).returncode == 0
    assert [m["lr"] for m in records(tmp_path / "flat")] == pytest.approx([3e-3, 3e-3])
    early = train(dataset, tmp_path / "early", 20, "--decay-steps", "2")
    assert early.returncode == 1 and early.stderr.strip() == "error: --decay-steps 2 must come after --warmup-steps 2"
