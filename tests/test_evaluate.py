"""`seqrl evaluate` through the installed command, on local worker processes and on real local Ray clusters."""

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from seqrl.agents.stats import iqm, iqm_interval, worst_window_mean
from seqrl.agents.sweep_report import group_runs, run_labels

DT_GRID = ("--env", "Hopper-v5", "--agent", "dt", "--set", "target_return=1800,3600", "--threads", "1", "--quiet")


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_cell(records: list[dict]) -> dict[tuple[str, float | None, int], float]:
    """Return of each (agent, target return, episode); an error if an episode is logged twice."""
    keyed = {(r["agent"], r["config"].get("target_return"), r["episode"]): r["return"] for r in records}
    assert len(keyed) == len(records), "an episode was logged twice"
    return keyed


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """A local Ray cluster of 2 CPUs for the session; its address, for `--ray ADDRESS`."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def start(command: list, directory: Path) -> subprocess.Popen:
    return subprocess.Popen(
        list(map(str, command)), cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_lines(log: Path, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not (log.exists() and len(log.read_text().splitlines()) >= count) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_ray_local_grid_equals_one_worker_and_rollout(seqrl, tmp_path):
    common = (*DT_GRID, "--episodes", 2, "--seed", 5, "--max-steps", 25)
    done = seqrl("evaluate", *common, "--ray", "local", "--workers", 2, "--log", "ray.jsonl", timeout=180)
    assert done.returncode == 0, done.stderr
    assert seqrl("evaluate", *common, "--workers", 1, "--log", "one.jsonl").returncode == 0
    on_ray, one = by_cell(read_log(tmp_path / "ray.jsonl")), by_cell(read_log(tmp_path / "one.jsonl"))
    assert len(on_ray) == 4 and on_ray == one
    for target in (1800, 3600):
        rollout = (
            "rollout",
            "--env",
            "Hopper-v5",
            "--agent",
            "dt",
            "--target-return",
            target,
            "--episodes",
            2,
            "--seed",
            5,
            "--max-steps",
            25,
            "--threads",
            1,
            "--quiet",
            "--log",
            f"rollout-{target}.jsonl",
        )
        assert seqrl(*rollout).returncode == 0
        for record in read_log(tmp_path / f"rollout-{target}.jsonl"):
            assert on_ray[(record["agent"], float(target), record["episode"])] == record["return"]
    line = read_log(tmp_path / "ray.jsonl")[0]
    assert line["cell"]["checkpoint"] == "bundled:hopper-dt"
    assert line["cell"]["settings"]["target_return"] in (1800, 3600)
    assert line["seed"] == 5 + line["episode"] and line["config"]["max_steps"] == 25


def test_killed_worker_costs_only_its_episodes(seqrl_command, ray_cluster, tmp_path):
    log = tmp_path / "sweep.jsonl"
    command = [
        seqrl_command,
        "evaluate",
        *DT_GRID,
        "--episodes",
        4,
        "--max-steps",
        150,
        "--ray",
        ray_cluster,
        "--workers",
        2,
        "--log",
        log,
    ]
    process = start(command, tmp_path)
    wait_for_lines(log, 1)
    workers = [p for p in psutil.Process().children(recursive=True) if "ray::EpisodeWorker" in " ".join(p.cmdline())]
    assert workers, "no Ray worker of the sweep found"
    workers[0].kill()
    _, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    assert "a worker died" in err
    records = read_log(log)
    assert sorted(by_cell(records)) == [("bundled:hopper-dt", t, e) for t in (1800.0, 3600.0) for e in range(4)]


def test_resume_after_an_interrupt_finishes_without_repeating(seqrl, seqrl_command, ray_cluster, tmp_path):
    common = (
        "evaluate",
        "--env",
        "Hopper-v5",
        "--agent",
        "random",
        "--checkpoint",
        "bundled:hopper-dt",
        "--episodes",
        8,
        "--max-steps",
        40,
        "--threads",
        1,
        "--quiet",
    )
    log = tmp_path / "sweep.jsonl"
    command = [seqrl_command, *common, "--ray", ray_cluster, "--workers", 2, "--log", log]
    process = start(command, tmp_path)
    wait_for_lines(log, 2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err, err
    interrupted = len(read_log(log))
    assert 2 <= interrupted < 16
    done = seqrl(*common, "--workers", 2, "--log", "sweep.jsonl", "--resume")
    assert done.returncode == 0, done.stderr
    resumed = by_cell(read_log(log))  # an error if an episode was logged twice
    assert sorted(resumed) == sorted(
        (agent, None if agent == "random" else 3600.0, episode)
        for agent in ("random", "bundled:hopper-dt")
        for episode in range(8)
    )
    again = seqrl(*common, "--log", "sweep.jsonl")  # a second run of the same sweep into its log
    assert again.returncode == 1 and "--resume" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent", "dt", "--set", "beam_width=8"], "beam-width"),
        (["--agent", "tt", "--set", "target_return=3600"], "target_return"),
        (["--agent", "random", "--set", "horizon=5"], "random agent takes no settings"),
        (["--agent", "dt", "--set", "target_return"], "NAME=V1,V2"),
        (["--checkpoint", "bundled:walker-tt"], "no bundled checkpoint 'walker-tt'"),
        (["--checkpoint", "/nonexistent/ckpt"], "/nonexistent/ckpt"),
        (["--agent", "dt", "--workers", "0"], "--workers"),
        (["--agent", "dt", "--set", "target_return=1", "--set", "target-return=2"], "given twice"),
    ],
)
def test_bad_input_fails_before_any_work(seqrl, tmp_path, args, message):
    done = seqrl("evaluate", "--env", "Hopper-v5", *args, "--ray", "local", "--log", "sweep.jsonl")
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "sweep.jsonl").exists()  # no log opened, no Ray cluster started, no worker spawned


def test_ray_flag_without_ray_names_the_extra(seqrl_command, tmp_path):
    (tmp_path / "ray.py").write_text("raise ImportError('no ray here')\n")  # Ray hidden from this process
    import os

    environment = {**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [str(seqrl_command), "evaluate", "--env", "Hopper-v5", "--agent", "random", "--ray", "local"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert done.returncode == 1 and "pip install 'seqrl[ray]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_sweep_plot_and_labels_name_what_differs(seqrl, tmp_path):
    done = seqrl("evaluate", *DT_GRID, "--agent", "random", "--episodes", 2, "--max-steps", 10, "--log", "sweep.jsonl")
    assert done.returncode == 1 and "random agent takes no settings" in done.stderr
    assert seqrl("evaluate", *DT_GRID, "--episodes", 6, "--max-steps", 10, "--log", "sweep.jsonl").returncode == 0
    runs = group_runs(read_log(tmp_path / "sweep.jsonl"))
    assert sorted(run_labels(runs).values()) == ["target_return=1800", "target_return=3600"]
    assert all(len(lines) == 6 for lines in runs.values())
    plotted = seqrl("plot", "sweep.jsonl", "-o", "sweep.png")
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


def test_iqm_interval_is_seeded_and_brackets_the_iqm():
    scores = np.random.default_rng(3).normal(50, 15, 40)
    low, high = iqm_interval(scores)
    assert low < iqm(scores) < high and (low, high) == iqm_interval(scores)
    assert iqm(np.array([0.0, 1.0, 2.0, 3.0, 100.0, -100.0, 1.5, 2.5])) == pytest.approx(1.75)
    assert worst_window_mean([5, 5, 5, 5, 5, 0, 0, 0, 0, 0]) == 0 and worst_window_mean([1, 2]) is None
    assert iqm_interval(np.array([1.0])) is None


def test_checkpoint_history_glob_and_shell_expansion(seqrl, tmp_path):
    import shutil

    from seqrl.agents.bundled import resolve_bundled

    history = tmp_path / "runs" / "x" / "checkpoints"
    for step in (1000, 500):
        shutil.copytree(resolve_bundled("hopper-dt"), history / f"step-{step}")
    common = ("evaluate", "--env", "Hopper-v5", "--episodes", 1, "--max-steps", 5, "--threads", 1, "--quiet")
    done = seqrl(*common, "--checkpoint", "runs/x/checkpoints/*", "--log", "history.jsonl")
    assert done.returncode == 0, done.stderr
    agents = [record["agent"] for record in read_log(tmp_path / "history.jsonl")]
    assert agents == ["runs/x/checkpoints/step-500", "runs/x/checkpoints/step-1000"]  # in step order
    shell_expanded = ("--checkpoint", "runs/x/checkpoints/step-1000", "runs/x/checkpoints/step-500")
    done = seqrl(*common, *shell_expanded, "--log", "history.jsonl", "--resume")  # the same cells: nothing to run
    assert done.returncode == 0, done.stderr
    assert len(read_log(tmp_path / "history.jsonl")) == 2


def test_none_switches_an_option_off_in_a_grid(seqrl, tmp_path):
    grid = ("--set", "k_act=none,2", "--set", "beam_width=2", "--set", "horizon=1", "--set", "n_expand=1")
    done = seqrl("evaluate", "--env", "Hopper-v5", "--agent", "tt", *grid, "--episodes", 1, "--max-steps", 2,
                 "--threads", "1", "--quiet", "--log", "off.jsonl")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(str(r["config"]["k_act"]) for r in read_log(tmp_path / "off.jsonl")) == ["2", "None"]
