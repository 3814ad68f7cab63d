"""Evaluation during training: seeded episodes in Hopper-v5 at every record, OUT/best/, TensorBoard, the plot."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_dt_train import TINY as DT_TINY
from tests.test_tt_train import TINY_RUN as TT_TINY
from tests.test_tt_train import metrics, write_tiny_dataset

EVAL = ["--eval-episodes", 2, "--eval-max-steps", 3]
DATASET = "seqrl/hopper/rollout-v0"


@pytest.fixture(scope="module")
def hopper_root(tmp_path_factory, run_seqrl) -> Path:
    """A Minari root holding six short random Hopper-v5 episodes, recorded by `seqrl rollout --record`."""
    root = tmp_path_factory.mktemp("hopper") / "datasets"
    done = run_seqrl("rollout", "--env", "Hopper-v5", "--episodes", 6, "--max-steps", 40, "--record", root, "--quiet")
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def train(run_seqrl, hopper_root):
    """Run `seqrl train tt|dt` on the Hopper dataset with the tiny models of the training tests."""

    def run(kind: str, out: Path, steps: int, *extra: object, check: bool = True):
        tiny = TT_TINY if kind == "tt" else DT_TINY
        args = ("train", kind, "--dataset", DATASET, "--datasets-root", hopper_root, "--out", out, "--steps", steps)
        done = run_seqrl(*args, *tiny, *extra, timeout=300)
        assert not check or done.returncode == 0, done.stderr
        return done

    return run


def same_weights(a: Path, b: Path) -> bool:
    one, other = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return one.keys() == other.keys() and all(torch.equal(one[key], other[key]) for key in one)


def check_eval_records(run: Path, steps: list[int]) -> None:
    """Every record holds two seeded episode scores; best/ is the best of them, loadable and at its step."""
    records = metrics(run)
    assert [r["step"] for r in records] == steps
    for record in records:
        assert len(record["eval_scores"]) == 2 and record["eval_seed_range"] == [10_000, 10_001]
        assert record["eval_score"] == pytest.approx(sum(record["eval_scores"]) / 2)
        assert record["eval_return"] > 0 and record["held_out_loss"] is not None
    best = json.loads((run / "best" / "best.json").read_text())
    top = max(r["eval_score"] for r in records)
    assert best["eval_score"] == top
    assert best["step"] == next(r["step"] for r in records if r["eval_score"] == top)  # the first to reach it
    assert json.loads((run / "best" / "seqrl.json").read_text())["steps"] == best["step"]


@pytest.mark.parametrize("kind", ["dt", "tt"])
def test_eval_scores_and_best_checkpoint_leave_training_unchanged(train, seqrl, tmp_path, kind):
    train(kind, tmp_path / "eval", 20, *EVAL)
    train(kind, tmp_path / "plain", 20)
    check_eval_records(tmp_path / "eval", [10, 20])
    assert same_weights(tmp_path / "eval", tmp_path / "plain")  # evaluation draws from no training stream
    assert metrics(tmp_path / "plain")[0].keys().isdisjoint({"eval_score", "eval_scores"})
    assert not (tmp_path / "plain" / "best").exists()
    info = seqrl("info", tmp_path / "eval" / "best")
    assert info.returncode == 0, info.stderr
    if kind == "tt":
        return  # planning with the TT's default beam is slow; the evaluations above ran it
    rollout = seqrl(
        "rollout",
        "--env",
        "Hopper-v5",
        "--checkpoint",
        tmp_path / "eval" / "best",
        "--episodes",
        1,
        "--max-steps",
        3,
        "--quiet",
        timeout=300,
    )
    assert rollout.returncode == 0, rollout.stderr


def test_resume_keeps_the_best_score_so_far(train, tmp_path):
    run = tmp_path / "run"
    train("dt", run, 20, *EVAL)
    best_file = run / "best" / "best.json"
    best = json.loads(best_file.read_text())
    best_file.write_text(json.dumps({**best, "eval_score": 1e9}))  # beyond any score this run reaches
    train("dt", run, 30, *EVAL, "--resume")
    assert [r["step"] for r in metrics(run)] == [10, 20, 30]
    assert json.loads(best_file.read_text())["eval_score"] == 1e9  # no later evaluation replaced it
    assert (run / "best" / "model.safetensors").exists()


def test_two_processes_evaluate_on_rank_zero(train, tmp_path):
    train("dt", tmp_path / "eval", 20, *EVAL, "--nproc", 2)
    train("dt", tmp_path / "plain", 20, "--nproc", 2)
    check_eval_records(tmp_path / "eval", [10, 20])
    assert same_weights(tmp_path / "eval", tmp_path / "plain")


def test_eval_needs_a_dataset_with_an_env(seqrl, tmp_path):
    dataset = write_tiny_dataset(tmp_path / "tiny.hdf5")
    done = seqrl("train", "tt", "--dataset", dataset, "--out", tmp_path / "run", "--steps", 5, *TT_TINY, *EVAL)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--eval-episodes needs the env of the data" in errors[0]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_events_hold_the_metrics(train, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, board = tmp_path / "run", tmp_path / "board"
    train("dt", run, 20, *EVAL, "--tensorboard", board)
    events = EventAccumulator(str(board))
    events.Reload()
    assert {"train_loss", "held_out_loss", "lr", "eval_score", "eval_return"} <= set(events.Tags()["scalars"])
    assert [event.step for event in events.Scalars("eval_score")] == [10, 20]
    assert [event.value for event in events.Scalars("eval_score")] == pytest.approx(
        [r["eval_score"] for r in metrics(run)]
    )


def test_plot_draws_the_eval_scores(train, seqrl, tmp_path):
    pytest.importorskip("matplotlib")
    train("dt", tmp_path / "run", 20, *EVAL)
    done = seqrl("plot", tmp_path / "run" / "metrics.jsonl", "-o", tmp_path / "curves.png")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
