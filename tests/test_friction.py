"""Small things a new user hits: install hints, --version, --video failures, a bad MUJOCO_GL, the summary's std."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from seqrl import __version__


def test_version(seqrl):
    result = seqrl("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"seqrl {__version__}"


def test_install_hint_keeps_its_brackets(seqrl, tmp_path):
    hidden = tmp_path / "hide"  # a matplotlib that fails to import, as if it were not installed
    (hidden / "matplotlib").mkdir(parents=True)
    (hidden / "matplotlib" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    (tmp_path / "runs.jsonl").write_text("")
    path = os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")])
    result = seqrl("plot", "runs.jsonl", env={"PYTHONPATH": path})
    assert result.returncode == 1
    assert "pip install 'seqrl[plot]'" in result.stderr, result.stderr


@pytest.mark.parametrize("place", ["/proc/self/out.mp4", "/proc/no-such-dir/out.mp4"])
def test_video_to_an_unwritable_place_is_a_one_line_error(seqrl, place):
    pytest.importorskip("imageio_ffmpeg")
    result = seqrl(
        "rollout", "--env", "Hopper-v5", "--agent", "random", "--episodes", "1", "--max-steps", "5", "--video", place
    )
    assert result.returncode == 1, result.stdout
    assert "video:" not in result.stdout
    assert result.stderr.strip().startswith("error:") and place in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not Path(place).exists()


def test_bad_mujoco_gl_is_a_one_line_error(seqrl, tmp_path):
    result = seqrl(
        "rollout",
        "--env",
        "Hopper-v5",
        "--agent",
        "random",
        "--episodes",
        "1",
        "--max-steps",
        "5",
        "--video",
        tmp_path / "out.mp4",
        env={"MUJOCO_GL": "bogus"},
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "MUJOCO_GL=bogus" in result.stderr


def test_summary_says_its_std_is_the_sample_std(seqrl, tmp_path):
    result = seqrl(
        "rollout",
        "--env",
        "Hopper-v5",
        "--agent",
        "random",
        "--episodes",
        "3",
        "--max-steps",
        "5",
        "--log",
        "runs.jsonl",
    )
    assert result.returncode == 0, result.stderr
    returns = [json.loads(line)["return"] for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    row = next(line for line in result.stdout.splitlines() if "sample std" in line)
    assert f"{np.std(returns, ddof=1):.1f}" in row.split()


def test_a_minari_id_not_held_locally_names_the_download_command(tmp_path, monkeypatch):
    from seqrl import SeqrlError
    from seqrl.envs.datasets import load_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))  # an empty root: nothing local, and no network used
    with pytest.raises(SeqrlError, match="minari download mujoco/hopper/medium-v0"):
        load_dataset("mujoco/hopper/medium-v0")
