"""`seqrl plot` and `seqrl rollout --video`, through the installed command."""

import ctypes.util
import json

import numpy as np
import pytest


def test_plot_draws_returns_from_a_rollout_log(tmp_path, seqrl):
    image = pytest.importorskip("PIL.Image")
    log = tmp_path / "runs.jsonl"
    run = seqrl(
        "rollout",
        "--env",
        "Hopper-v5",
        "--agent",
        "random",
        "--episodes",
        "4",
        "--max-steps",
        "30",
        "--log",
        str(log),
        "--quiet",
    )
    assert run.returncode == 0, run.stderr
    assert len(log.read_text().splitlines()) == 4

    drawn = seqrl("plot", str(log), "-o", str(tmp_path / "returns.png"))
    assert drawn.returncode == 0, drawn.stderr
    with image.open(tmp_path / "returns.png") as picture:
        assert picture.format == "PNG"
        pixels = np.asarray(picture.convert("L"), dtype=float)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels.std() > 5  # axes, lines and labels, not a blank canvas


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        ("not json\n{}\n", "line 1 is not a JSON object of an episode"),
        ('{"a": 1}\n', "line 1 is not a JSON object of an episode"),
    ],
)
def test_plot_rejects_bad_logs_in_one_line(tmp_path, seqrl, content, message):
    log = tmp_path / "runs.jsonl"
    if content is not None:
        log.write_text(content)
    run = seqrl("plot", str(log), "-o", str(tmp_path / "out.png"))
    assert run.returncode == 1
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert "Traceback" not in run.stderr


def test_plot_skips_a_torn_last_line(tmp_path, seqrl):
    log = tmp_path / "runs.jsonl"
    record = {"env_id": "Hopper-v5", "agent": "random", "episode": 0, "return": 12.5, "normalized_score": 1.0}
    log.write_text(json.dumps(record) + "\n" + '{"env_id": "Hop')
    run = seqrl("plot", str(log), "-o", str(tmp_path / "out.png"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out.png").stat().st_size > 0


@pytest.mark.skipif(
    not (ctypes.util.find_library("EGL") or ctypes.util.find_library("OSMesa")), reason="no offscreen OpenGL"
)
def test_rollout_films_the_first_episode(tmp_path, seqrl):
    imageio = pytest.importorskip("imageio.v2")
    pytest.importorskip("imageio_ffmpeg")
    video = tmp_path / "hopper.mp4"
    run = seqrl(
        "rollout",
        "--env",
        "Hopper-v5",
        "--agent",
        "random",
        "--episodes",
        "2",
        "--max-steps",
        "12",
        "--video",
        str(video),
    )
    assert run.returncode == 0, run.stderr
    assert "12 frames" in run.stdout
    reader = imageio.get_reader(video)
    assert reader.count_frames() == 12  # one frame per step of episode 0 only
    frames = [reader.get_data(index) for index in (0, 11)]
    assert frames[0].ndim == 3 and frames[0].std() > 5
    assert np.abs(frames[0].astype(float) - frames[-1].astype(float)).mean() > 0.1  # the hopper moved
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_video_refuses_other_formats_and_vector_envs(tmp_path, seqrl):
    wrong_suffix = seqrl(
        "rollout", "--env", "Hopper-v5", "--agent", "random", "--episodes", "1", "--video", str(tmp_path / "out.gif")
    )
    assert wrong_suffix.returncode == 1 and "MP4" in wrong_suffix.stderr
    vector = seqrl(
        "rollout",
        "--env",
        "Hopper-v5",
        "--agent",
        "random",
        "--episodes",
        "2",
        "--num-envs",
        "2",
        "--video",
        str(tmp_path / "out.mp4"),
    )
    assert vector.returncode == 1 and "--num-envs" in vector.stderr


def test_plot_draws_learning_curves_from_a_training_run(tmp_path, seqrl, shared_datasets):
    image_module = pytest.importorskip("PIL.Image")
    out = tmp_path / "run"
    trained = seqrl(
        "train",
        "dt",
        "--dataset",
        "zoo/hopper/medium-v0",
        "--out",
        out,
        "--steps",
        6,
        "--eval-every",
        2,
        "--n-layer",
        1,
        "--hidden-size",
        16,
        "--batch-size",
        4,
        "--threads",
        1,
        env={"MINARI_DATASETS_PATH": str(shared_datasets)},
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    drawn = seqrl("plot", out / "metrics.jsonl")
    assert drawn.returncode == 0, drawn.stderr
    image = np.asarray(image_module.open(tmp_path / "learning_curves.png").convert("RGB"), dtype=float)
    assert image.shape[0] > 200 and image.std() > 10  # lines, labels and a title, not a blank canvas
