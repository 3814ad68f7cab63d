"""Training runs as a user starts them: two data-parallel processes, stop signals, torn metrics, checkpoint history."""

import json
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_tt_train import TINY_RUN, metrics, write_tiny_dataset


def wait_for(condition: Callable[[], object], seconds: float = 120) -> None:
    """Poll `condition` until it holds; fail the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the training run"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("train_runs") / "tiny.hdf5")


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, run_seqrl, dataset) -> dict[str, Path]:
    """Run A: 30 steps on 2 gloo processes; run B: 20 steps, then --resume to 30, also on 2; run C: A on 1 process."""
    root = tmp_path_factory.mktemp("two_process")

    def train(out: str, *extra: object, nproc: int = 2) -> None:
        args = ("train", "tt", "--dataset", dataset, "--out", root / out, *TINY_RUN, "--nproc", nproc, *extra)
        done = run_seqrl(*args, timeout=300)
        assert done.returncode == 0, done.stderr

    train("A", "--steps", 30)
    train("B", "--steps", 20)
    train("B", "--steps", 30, "--resume")
    train("C", "--steps", 30, nproc=1)
    return {run: root / run for run in "ABC"}


def test_two_processes_train_and_resume_to_the_same_weights(two_process_runs):
    once, resumed = (load_file(two_process_runs[run] / "model.safetensors") for run in "AB")
    assert all(torch.equal(once[key], resumed[key]) for key in once)
    records, resumed_records = metrics(two_process_runs["A"]), metrics(two_process_runs["B"])
    assert [{**r, "elapsed": 0} for r in records] == [{**r, "elapsed": 0} for r in resumed_records]
    assert [r["step"] for r in records] == [10, 20, 30] and records[-1]["train_loss"] < records[0]["train_loss"]
    one_process = metrics(two_process_runs["C"])
    # the global batch is --batch-size, split over the ranks: same tokens, nearly the same losses as one process
    assert [r["tokens"] for r in records] == [r["tokens"] for r in one_process]
    for two, one in zip(records, one_process):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=0.15)


def test_a_torn_last_metrics_line_is_dropped_on_resume(seqrl, dataset, tmp_path):
    args = ("train", "tt", "--dataset", dataset, "--out", tmp_path / "run", *TINY_RUN)
    assert seqrl(*args, "--steps", 15).returncode == 0
    with open(tmp_path / "run" / "metrics.jsonl", "a") as file:
        file.write('{"step": 16, "tok')  # a kill while appending
    done = seqrl(*args, "--steps", 20, "--resume")
    assert done.returncode == 0, done.stderr
    assert "dropped the torn last line" in done.stderr
    assert [r["step"] for r in metrics(tmp_path / "run")] == [10, 15, 20]  # 15: the first run's end


def test_keep_checkpoints_keeps_every_save_as_a_loadable_directory(seqrl, dataset, tmp_path):
    done = seqrl(
        "train",
        "tt",
        "--dataset",
        dataset,
        "--out",
        tmp_path / "run",
        *TINY_RUN,
        "--steps",
        30,
        "--keep-checkpoints",
        "--eval-every",
        15,
    )
    assert done.returncode == 0, done.stderr
    history = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in history.iterdir()) == ["step-15", "step-30"]
    for step in (15, 30):
        info = seqrl("info", history / f"step-{step}")
        assert info.returncode == 0 and f"{step} steps" in info.stdout, info.stderr
    last, kept = load_file(tmp_path / "run" / "model.safetensors"), load_file(history / "step-30" / "model.safetensors")
    assert all(torch.equal(last[key], kept[key]) for key in last)


def test_short_runs_warn_that_the_warmup_outlasts_them(seqrl, dataset, tmp_path):
    done = seqrl(
        "train", "tt", "--dataset", dataset, "--out", tmp_path / "run", *TINY_RUN, "--steps", 5, "--warmup-epochs", 2
    )
    assert done.returncode == 0, done.stderr
    assert "warmup" in done.stderr and "never reaches" in done.stderr


@pytest.mark.parametrize("signum, status, nproc", [(signal.SIGTERM, 143, 1), (signal.SIGINT, 130, 2)])
def test_a_stop_signal_keeps_the_last_checkpoint(seqrl_command, dataset, tmp_path, signum, status, nproc):
    out = tmp_path / "run"
    command = [
        seqrl_command,
        "train",
        "tt",
        "--dataset",
        dataset,
        "--out",
        out,
        *TINY_RUN,
        "--steps",
        1_000_000,
        "--save-every",
        5,
        "--eval-every",
        5,
        "--nproc",
        nproc,
    ]
    # started the way a shell starts a background job: SIGINT ignored until seqrl installs its own handler
    process = subprocess.Popen(
        list(map(str, command)),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    wait_for((out / "training_state.pt").exists)
    os.kill(process.pid, signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert "is intact (continue with --resume)" in stderr and "Traceback" not in stderr
    saved = json.loads((out / "seqrl.json").read_text())["steps"]
    assert saved % 5 == 0 and [r["step"] for r in metrics(out)][-1] <= saved + 10


def test_a_stop_before_the_first_save_does_not_offer_resume(seqrl_command, dataset, tmp_path):
    command = [
        seqrl_command,
        "train",
        "tt",
        "--dataset",
        dataset,
        "--out",
        tmp_path / "run",
        *TINY_RUN,
        "--steps",
        1_000_000,
        "--save-every",
        1_000_000,
        "--eval-every",
        1,
    ]
    process = subprocess.Popen(list(map(str, command)), stderr=subprocess.PIPE, text=True)
    wait_for(
        lambda: (tmp_path / "run" / "metrics.jsonl").exists() and (tmp_path / "run" / "metrics.jsonl").stat().st_size
    )
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "before the first checkpoint" in stderr and "--resume" not in stderr, stderr


def test_a_failed_save_is_one_line_and_keeps_the_previous_checkpoint(seqrl_command, seqrl, dataset, tmp_path):
    args = ["train", "tt", "--dataset", dataset, "--out", tmp_path / "run", *TINY_RUN]
    assert seqrl(*args, "--steps", 15).returncode == 0
    before = load_file(tmp_path / "run" / "model.safetensors")

    def small_files() -> None:  # a disk that fills up: no file may grow past 16 KiB
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))

    done = subprocess.run(
        list(map(str, [seqrl_command, *args, "--steps", 30, "--resume"])),
        capture_output=True,
        text=True,
        preexec_fn=small_files,
        timeout=120,
    )
    assert done.returncode == 1 and "cannot save step 30" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "the checkpoint of step 15 is intact" in done.stderr
    after = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_a_second_run_into_a_live_runs_out_is_refused_and_leaves_it_intact(seqrl_command, seqrl, dataset, tmp_path):
    out = tmp_path / "run"
    args = ["train", "tt", "--dataset", dataset, "--out", out, *TINY_RUN, "--eval-every", 1]
    first = subprocess.Popen(list(map(str, [seqrl_command, *args, "--steps", 1_000_000])), stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (out / "training_state.pt").exists())  # past its first save
        for extra in ([], ["--resume"]):
            second = seqrl(*args, "--steps", 1_000_000, *extra)
            assert second.returncode == 1, second.stderr
            assert f"another `seqrl train` is writing to --out {out}" in second.stderr, second.stderr
        assert metrics(out)[0]["step"] == 1  # the live run's records were not wiped
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130
    resumed = seqrl(*args, "--steps", metrics(out)[-1]["step"] + 2, "--resume")  # the lock went with the process
    assert resumed.returncode == 0, resumed.stderr
