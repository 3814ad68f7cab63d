"""`seqrl rollout` through the installed command: logs, seeding, interrupts, resume, truncation, bad input."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from seqrl import SeqrlError
from seqrl.agents.episode_log import EpisodeLog

LOG_KEYS = {
    "env_id",
    "agent",
    "episode",
    "seed",
    "return",
    "length",
    "normalized_score",
    "reference",
    "terminated",
    "truncated",
    "wall_time_s",
    "config",
}


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def returns(records: list[dict]) -> dict[int, float]:
    return {record["episode"]: record["return"] for record in records}


def test_rollout_logs_each_episode_and_prints_a_summary(seqrl, tmp_path):
    done = seqrl(
        "rollout", "--env", "Hopper-v5", "--agent", "random", "--episodes", 3, "--seed", 0, "--log", "runs.jsonl"
    )
    assert done.returncode == 0, done.stderr
    records = read_log(tmp_path / "runs.jsonl")
    assert [r["episode"] for r in records] == [0, 1, 2] and [r["seed"] for r in records] == [0, 1, 2]
    for record in records:
        assert set(record) == LOG_KEYS
        assert record["env_id"] == "Hopper-v5" and record["agent"] == "random"
        assert record["config"]["agent"] == "random" and record["config"]["seqrl_version"]
        assert record["terminated"] or record["truncated"]
    assert "agent: random" in done.stdout
    mean_return = sum(r["return"] for r in records) / len(records)
    assert f"{records[0]['return']:.1f}" in done.stdout and f"{mean_return:.1f}" in done.stdout
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_without_a_bundled_agent_the_default_is_random_and_says_so(seqrl):
    done = seqrl("rollout", "--env", "Walker2d-v5", "--episodes", 1, "--max-steps", 5)
    assert done.returncode == 0, done.stderr
    assert "agent: random" in done.stdout and "no trained agent is bundled for Walker2d-v5" in done.stdout


def test_same_seed_gives_the_same_episodes_and_quiet_prints_nothing(seqrl, tmp_path):
    for log in ("a.jsonl", "b.jsonl"):
        done = seqrl(
            "rollout", "--env", "Hopper-v5", "--episodes", 3, "--seed", 4, "--max-steps", 40, "--log", log, "--quiet"
        )
        assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    first, second = read_log(tmp_path / "a.jsonl"), read_log(tmp_path / "b.jsonl")
    assert returns(first) == returns(second)
    assert len(set(returns(first).values())) == 3


@pytest.mark.parametrize("num_envs", [1, 2])
def test_episode_i_alone_with_seed_plus_i(seqrl, tmp_path, num_envs):
    common = ("rollout", "--env", "Hopper-v5", "--max-steps", 40, "--num-envs", num_envs, "--quiet")
    assert seqrl(*common, "--episodes", 3, "--seed", 10, "--log", "all.jsonl").returncode == 0
    assert seqrl(*common, "--episodes", 1, "--seed", 12, "--log", "alone.jsonl").returncode == 0
    run, (alone,) = read_log(tmp_path / "all.jsonl"), read_log(tmp_path / "alone.jsonl")
    episode_2 = next(r for r in run if r["episode"] == 2)
    assert (alone["seed"], alone["return"], alone["length"]) == (
        episode_2["seed"],
        episode_2["return"],
        episode_2["length"],
    )


def test_max_steps_truncates(seqrl, tmp_path):
    assert (
        seqrl(
            "rollout", "--env", "Hopper-v5", "--episodes", 4, "--max-steps", 8, "--log", "runs.jsonl", "--quiet"
        ).returncode
        == 0
    )
    records = read_log(tmp_path / "runs.jsonl")
    assert all(r["length"] <= 8 for r in records) and any(r["length"] == 8 for r in records)
    assert all(r["truncated"] for r in records if r["length"] == 8)
    assert all(r["config"]["max_steps"] == 8 for r in records)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_keeps_finished_episodes_and_exits_cleanly(seqrl_command, tmp_path, signum, status):
    log = tmp_path / "runs.jsonl"
    command = [seqrl_command, "rollout", "--env", "Hopper-v5", "--episodes", 100_000, "--max-steps", 20, "--log", log]
    process = subprocess.Popen(
        list(map(str, command)), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == status, err
    assert "Traceback" not in err
    records = read_log(log)  # every line complete
    assert 1 <= len(records) < 100_000
    assert sorted(r["episode"] for r in records) == list(range(len(records)))
    assert f"interrupted by {signal.Signals(signum).name}: {len(records)} of 100000 episodes finished" in " ".join(
        out.split()
    )


def test_resume_skips_logged_episodes_and_tolerates_a_torn_line(seqrl, tmp_path):
    common = ("rollout", "--env", "Hopper-v5", "--max-steps", 30, "--seed", 3, "--quiet")
    assert seqrl(*common, "--episodes", 4, "--log", "fresh.jsonl").returncode == 0
    assert seqrl(*common, "--episodes", 2, "--log", "resumed.jsonl").returncode == 0
    with open(tmp_path / "resumed.jsonl", "a") as file:
        file.write('{"env_id": "Hopper-v5", "epis')  # a line cut short by a crash
    done = seqrl(*common, "--episodes", 4, "--log", "resumed.jsonl", "--resume")
    assert done.returncode == 0, done.stderr
    assert "dropped the torn last line" in done.stderr
    resumed = read_log(tmp_path / "resumed.jsonl")
    assert [r["episode"] for r in resumed] == [0, 1, 2, 3]
    assert returns(resumed) == returns(read_log(tmp_path / "fresh.jsonl"))
    done = seqrl(*common, "--episodes", 4, "--log", "resumed.jsonl", "--resume")  # nothing left to run
    assert done.returncode == 0 and len(read_log(tmp_path / "resumed.jsonl")) == 4


def test_resume_with_other_settings_is_an_error(seqrl, tmp_path):
    assert (
        seqrl(
            "rollout", "--env", "Hopper-v5", "--episodes", 1, "--max-steps", 5, "--log", "runs.jsonl", "--quiet"
        ).returncode
        == 0
    )
    done = seqrl("rollout", "--env", "Hopper-v5", "--episodes", 2, "--max-steps", 6, "--log", "runs.jsonl", "--resume")
    assert done.returncode == 1 and "max_steps 5 there, 6 here" in done.stderr
    assert len(read_log(tmp_path / "runs.jsonl")) == 1


def test_log_with_a_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "runs.jsonl"
    text = '{"episode": 0, "return": 1.0}\nnot json\n{"episode": 1, "return": 2.0}\n'
    path.write_text(text)
    with pytest.raises(SeqrlError, match="line 2 is not a JSON object"):
        EpisodeLog(path)
    assert path.read_text() == text


@pytest.mark.parametrize("text", ["my notes", "my notes\n", '{"episode": 0, "return": 1.0}\n{"a": 1}'])
def test_a_file_that_is_not_an_episode_log_is_never_changed(seqrl, tmp_path, text):
    (tmp_path / "notes.txt").write_text(text)
    done = seqrl(
        "rollout", "--env", "Hopper-v5", "--agent", "random", "--episodes", 1, "--max-steps", 5, "--log", "notes.txt"
    )
    assert done.returncode == 1 and "is this a seqrl episode log?" in done.stderr
    assert (tmp_path / "notes.txt").read_text() == text


def test_a_second_writer_of_one_log_is_refused(tmp_path):
    first = EpisodeLog(tmp_path / "runs.jsonl")
    with pytest.raises(SeqrlError, match="another seqrl run is writing"):
        EpisodeLog(tmp_path / "runs.jsonl")
    first.close()
    EpisodeLog(tmp_path / "runs.jsonl").close()  # free again once the first one closed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "Hoper-v5"], "Hoper-v5"),
        (["--env", "Hopper-v5", "--checkpoint", "/nonexistent/tt-hopper"], "/nonexistent/tt-hopper"),
        (["--env", "Hopper-v5", "--num-envs", "0"], "--num-envs"),
        (["--env", "Hopper-v5", "--episodes", "0"], "--episodes"),
        (["--env", "Hopper-v5", "--max-steps", "0"], "--max-steps"),
        (["--env", "Hopper-v5", "--agent", "greedy"], "greedy"),
        (["--env", "Hopper-v5", "--agent", "random", "--checkpoint", "ckpt"], "--agent and --checkpoint"),
        (["--env", "Hopper-v5", "--resume"], "--log"),
        (["--env", "Hopper-v5", "--record-id", "a/b-v0"], "--record"),
        (["--env", "Hopper-v5", "--device", "tpu"], "--device"),
        (["--env", "Hopper-v5", "--log", "."], "directory"),
    ],
)
def test_bad_input_gives_one_line_error(seqrl, args, message):
    done = seqrl("rollout", *args)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert message in done.stderr
