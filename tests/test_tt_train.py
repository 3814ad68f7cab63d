"""Trajectory Transformer data and training: the original's transitions and windows, `seqrl train tt`, `seqrl info`."""

import json
import math
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from seqrl import (
    DecisionTransformerConfig,
    DecisionTransformerModel,
    SeqrlError,
    TrajectoryTransformerConfig,
    TrajectoryTransformerModel,
)
from seqrl.envs.datasets import Episode, load_dataset
from seqrl.planners.info import describe_checkpoint
from seqrl.planners.training import EpochSampler, adamw, split_episodes, warmup_cosine
from seqrl.planners.trajectory.data import TokenWindows, episode_transitions, token_windows
from seqrl.planners.trajectory.discretizer import Discretizer
from seqrl.planners.trajectory.options import TrainArgs
from seqrl.planners.trajectory.train import train_tt

TINY_MODEL = ["--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--sequence-length", 3, "--n-bins", 10]
TINY_RUN = [*TINY_MODEL, "--batch-size", 16, "--lr", 3e-3, "--eval-every", 10, "--save-every", 15, "--holdout", 0.2]
TINY_RUN += ["--device", "cpu", "--threads", 1, "--quiet"]


def episode(rewards: list[float], terminated: bool) -> Episode:
    """An episode with 1-D observations 10*t and actions -t, ending terminated or truncated."""
    steps = len(rewards)
    ends = np.arange(steps) == steps - 1
    return Episode(
        observations=10 * np.arange(steps, dtype=np.float32)[:, None],
        actions=-np.arange(steps, dtype=np.float32)[:, None],
        rewards=np.array(rewards, dtype=np.float32),
        terminations=ends & terminated,
        truncations=ends & (not terminated),
    )


def test_transitions_hold_penalized_rewards_and_discounted_values_to_go():
    rows = episode_transitions(episode([1.0, 2.0, 3.0], terminated=True), discount=0.5, termination_penalty=-100)
    # terminal reward 3 -> -100; value_t = sum_k>=1 0.5^(k-1) r_(t+k): v0 = 2 + 0.5 * -100, v1 = -100, v2 = 0
    np.testing.assert_allclose(rows, [[0, 0, 1, -48], [10, -1, 2, -100], [20, -2, -100, 0]])
    truncated = episode_transitions(episode([1.0, 2.0, 3.0], terminated=False), discount=0.5, termination_penalty=-100)
    np.testing.assert_allclose(truncated[:, 2:], [[1, 3.5], [2, 3], [3, 0]])


def test_windows_start_at_every_step_but_the_last_and_pad_with_the_stop_token():
    # tokens equal to (episode * 10 + step) in both dims, so every row is recognisable; stop token 99
    tokens = torch.tensor([[0, 0], [1, 1], [2, 2], [10, 10], [11, 11]])
    windows = TokenWindows(tokens, lengths=[3, 2], sequence_length=2, max_path_length=2, stop_token=99)
    assert len(windows) == 3  # starts (0, 0), (0, 1), (1, 0): the original skips each episode's last step
    x, y, mask = windows[torch.arange(3)]
    full = [[0, 0, 1, 1], [1, 1, 2, 2], [10, 10, 11, 11]]
    assert x.tolist() == [row[:-1] for row in full] and y.tolist() == [row[1:] for row in full]
    # steps >= max_path_length (2) are masked: the window of steps (1, 2) loses its second transition
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 1]]
    assert x.dtype == y.dtype == torch.int64

    windows = TokenWindows(tokens, lengths=[3, 2], sequence_length=3, max_path_length=1000, stop_token=99)
    x, y, mask = windows[1]  # steps 1, 2 and one past the end of episode 0
    assert torch.cat([x, y[-1:]]).tolist() == [1, 1, 2, 2, 99, 99]
    assert mask.tolist() == [1.0] * 5  # positions past the end are trained on
    x, _, _ = windows[2]  # episode 1, step 0
    assert x.tolist() == [10, 10, 11, 11, 99]


def test_adamw_decays_weight_matrices_only():
    config = TrajectoryTransformerConfig(observation_dim=2, action_dim=1, transition_dim=5, block_size=14, n_layer=1)
    model = TrajectoryTransformerModel(config)
    decay, no_decay = adamw(model, 1e-3, 0.1, (0.9, 0.95)).param_groups
    names = {id(p): name for name, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in decay["params"])
    expected = sorted(f"blocks.0.{m}.weight" for m in ("attn.key", "attn.query", "attn.value", "attn.proj", "l1", "l2"))
    assert decayed == sorted([*expected, "head.weight"]) and decay["weight_decay"] == 0.1
    assert {"tok_emb.weight", "pos_emb", "ln_f.weight", "blocks.0.ln1.bias"} <= {
        names[id(p)] for p in no_decay["params"]
    }
    assert no_decay["weight_decay"] == 0.0 and len(decay["params"]) + len(no_decay["params"]) == len(names)


def test_warmup_then_cosine_to_the_floor():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = warmup_cosine(optimizer, warmup_steps=4, decay_steps=8, min_ratio=0.1)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    cosine = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]  # 1, 0.85, 0.5, 0.15, 0 -> floor 0.1
    np.testing.assert_allclose(lrs, [0.25, 0.5, 0.75, *cosine[:3], 0.1464466, 0.1, 0.1, 0.1, 0.1, 0.1], atol=1e-6)


def test_epoch_sampler_covers_each_epoch_once_and_reshuffles():
    sampler = EpochSampler(size=10, batch_size=4, seed=3)
    epochs = [torch.cat([sampler.indices(step) for step in range(e * 3, e * 3 + 3)]) for e in range(2)]
    assert all(sorted(epoch.tolist()) == list(range(10)) for epoch in epochs)
    assert epochs[0].tolist() != epochs[1].tolist()
    assert torch.equal(EpochSampler(10, 4, 3).indices(4), sampler.indices(4))  # a step alone picks its batch


def test_held_out_split_is_seeded_and_never_takes_every_episode():
    train, held = split_episodes(20, 0.1, seed=0)
    assert len(held) == 2 and sorted([*train, *held]) == list(range(20))
    assert np.array_equal(held, split_episodes(20, 0.1, seed=0)[1])
    assert len(split_episodes(1, 0.5, seed=0)[1]) == 0 and len(split_episodes(5, 0.0, seed=0)[1]) == 0


def write_tiny_dataset(path: Path) -> Path:
    """A D4RL-style file: 12 episodes of 30 steps of a simple linear system, every third one terminated."""
    rng = np.random.default_rng(0)
    columns = {key: [] for key in ("observations", "actions", "rewards", "terminals", "timeouts")}
    for index in range(12):
        observation = rng.uniform(-1, 1, size=2)
        for t in range(30):
            action = np.sin(0.3 * t + index)
            last = t == 29
            terminal = last and index % 3 == 0
            step = (observation, [action], observation[0] + action, terminal, last and not terminal)
            for key, value in zip(columns, step):
                columns[key].append(value)
            observation = 0.8 * observation + [action, -action]
    with h5py.File(path, "w") as file:
        for key, values in columns.items():
            file[key] = np.array(values, dtype=bool if key in ("terminals", "timeouts") else np.float32)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, run_seqrl) -> dict[str, Path]:
    """Run A: 40 steps in one go; run B: 25 steps, then --resume to 40. Both from the same tiny dataset."""
    root = tmp_path_factory.mktemp("tt_train")
    dataset = write_tiny_dataset(root / "tiny.hdf5")

    def train(out: str, *extra: object) -> None:
        done = run_seqrl("train", "tt", "--dataset", dataset, "--out", root / out, *TINY_RUN, *extra)
        assert done.returncode == 0, done.stderr

    train("A", "--steps", 40)
    train("B", "--steps", 25)
    train("B", "--steps", 40, "--resume")
    return {"root": root, "dataset": dataset, "A": root / "A", "B": root / "B"}


def metrics(run: Path) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_lowers_the_loss_and_writes_a_checkpoint(runs):
    run = runs["A"]
    assert {"config.json", "model.safetensors", "discretizer.npz", "seqrl.json", "metrics.jsonl"} <= {
        p.name for p in run.iterdir()
    }
    records = metrics(run)
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert records[-1]["train_loss"] < 0.8 * records[0]["train_loss"]
    assert records[-1]["held_out_loss"] < records[0]["held_out_loss"]
    config = json.loads((run / "config.json").read_text())
    # transition = observation 2 + action 1 + reward + value; block = 3 transitions - 1 token
    assert (config["transition_dim"], config["block_size"], config["vocab_size"]) == (5, 14, 10)
    meta = json.loads((run / "seqrl.json").read_text())
    assert meta["kind"] == "tt" and meta["steps"] == 40 and meta["discount"] == 0.99
    assert meta["final_loss"] == records[-1]["train_loss"] and meta["training"]["lr"] == 3e-3
    assert meta["datasets"] == [str(runs["dataset"])]
    model = TrajectoryTransformerModel.from_pretrained(run)  # the checkpoint loads as a model
    assert model.config.n_embd == 32


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(runs):
    once, resumed = load_file(runs["A"] / "model.safetensors"), load_file(runs["B"] / "model.safetensors")
    assert once.keys() == resumed.keys() and all(torch.equal(once[key], resumed[key]) for key in once)
    held_out = {r["step"]: r["held_out_loss"] for r in metrics(runs["A"])}
    resumed_held_out = [(r["step"], r["held_out_loss"]) for r in metrics(runs["B"]) if r["step"] in (30, 40)]
    assert resumed_held_out == [(30, held_out[30]), (40, held_out[40])]


def test_bf16_autocast_training_follows_the_fp32_run(runs, seqrl, tmp_path):
    done = seqrl(
        "train",
        "tt",
        "--dataset",
        runs["dataset"],
        "--out",
        tmp_path / "bf16",
        *TINY_RUN,
        "--steps",
        20,
        "--precision",
        "bf16",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "bf16" / "seqrl.json").read_text())["training"]["precision"] == "bf16"
    fp32 = {r["step"]: r["train_loss"] for r in metrics(runs["A"])}
    for record in metrics(tmp_path / "bf16"):  # same seed, batches and dropout masks: only the rounding differs
        assert record["train_loss"] == pytest.approx(fp32[record["step"]], rel=0.01)
        assert record["train_loss"] != fp32[record["step"]]


def test_info_describes_a_training_checkpoint(runs, seqrl):
    done = seqrl("info", runs["A"])
    assert done.returncode == 0, done.stderr
    parameters = sum(p.numel() for p in TrajectoryTransformerModel.from_pretrained(runs["A"]).parameters())
    expected_rows = (
        "Trajectory Transformer (seqrl, TT)",
        "observation 2, action 1, transition 5",
        f"{parameters:,}",
        "40 steps",
    )
    for expected in (*expected_rows, "quantile"):
        assert expected in done.stdout


def test_info_describes_plain_hugging_face_and_decision_transformer_dirs(runs, seqrl, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(runs["A"] / name, plain / name)
    rows = dict(describe_checkpoint(plain))
    assert rows["kind"] == "Trajectory Transformer (plain Hugging Face)" and rows["discretizer"].startswith("missing")

    DecisionTransformerModel(DecisionTransformerConfig(state_dim=11, act_dim=3, n_layer=1)).save_pretrained(
        tmp_path / "dt"
    )
    meta = {"kind": "dt", "env_id": "Hopper-v5", "state_mean": [0.0] * 11, "state_std": [1.0] * 11}
    meta["policy"] = {"target_return": 3600}
    (tmp_path / "dt" / "seqrl.json").write_text(json.dumps(meta))
    done = seqrl("info", tmp_path / "dt")
    assert done.returncode == 0, done.stderr
    for expected in ("Decision Transformer (seqrl, DT)", "Hopper-v5", "state 11, action 3", "stored", "3600"):
        assert expected in done.stdout


def test_bad_directories_and_options_give_one_line_errors(runs, seqrl, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "not_json").mkdir()
    (tmp_path / "not_json" / "config.json").write_text("{oops")
    (tmp_path / "no_weights").mkdir()
    shutil.copy(runs["A"] / "config.json", tmp_path / "no_weights" / "config.json")
    for directory, message in [
        (tmp_path / "missing", "not found"),
        (tmp_path / "empty", "config.json is missing"),
        (tmp_path / "not_json", "not valid JSON"),
        (tmp_path / "no_weights", "has no model.safetensors"),
    ]:
        with pytest.raises(SeqrlError, match=message):
            describe_checkpoint(directory)
    tiny = dict(dataset=str(runs["dataset"]), n_layer=1, n_head=2, n_embd=32, sequence_length=3, n_bins=10, quiet=True)
    for args, message in [
        (dict(tiny, out=str(runs["A"]), steps=5), "pass --resume"),
        (dict(tiny, out=str(tmp_path / "empty"), steps=5, resume=True), "seqrl.json is missing"),
        (dict(tiny, n_bins=20, out=str(runs["A"]), steps=50, resume=True), "--n-bins 20 (was 10)"),
        (dict(tiny, out=str(tmp_path / "new"), steps=5, epochs=1), "not both"),
        (dict(tiny, out=str(tmp_path / "new"), steps=5, precision="fp16"), "precision got 'fp16'"),
    ]:
        with pytest.raises(SeqrlError, match=re.escape(message)):
            train_tt(TrainArgs(**args))
    # the command prints such errors as one line and exit status 1
    train_again = ["train", "tt", "--dataset", runs["dataset"], "--out", runs["A"], *TINY_RUN, "--steps", 5]
    for args, message in [(["info", tmp_path / "empty"], "config.json is missing"), (train_again, "pass --resume")]:
        done = seqrl(*args)
        assert done.returncode == 1 and done.stdout == "", done.stdout
        assert done.stderr.startswith("error:") and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert metrics(runs["A"])[-1]["step"] == 40  # refused runs left the checkpoint alone


def test_hopper_dataset_tokenizes_as_the_original(shared_datasets, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(shared_datasets))
    dataset = load_dataset("zoo/hopper/medium-v0")
    transitions = [episode_transitions(e, 0.99, -100) for e in dataset.episodes]
    rows = np.concatenate(transitions)
    assert rows.shape == (dataset.num_steps, 11 + 3 + 2)
    terminated = sum(bool(e.terminations.any()) for e in dataset.episodes)
    assert (rows[:, -2] == -100).sum() == terminated > 0
    discretizer = Discretizer.fit(rows, n_bins=100)
    counts = np.stack([np.bincount(column, minlength=100) for column in discretizer.discretize(rows).T.numpy()])
    # quantile bins split every dimension without heavily repeated values (clipped ones have) into equal shares
    repeats = np.array([np.unique(rows[:, dim], return_counts=True)[1].max() for dim in range(rows.shape[1])])
    spread = repeats <= 20
    assert spread.sum() >= 12 and (abs(counts[spread] - len(rows) / 100) <= 20).all()
    windows = token_windows(transitions, discretizer, sequence_length=10, max_path_length=1000)
    assert len(windows) == dataset.num_steps - len(dataset.episodes)
    x, y, mask = windows[torch.arange(len(windows) - 1, len(windows) - 3, -1)]
    assert (
        x.shape == (2, 159) and (y[:, -16:] == 100).all() and mask.all()
    )  # episode ends: stop tokens, still trained on
