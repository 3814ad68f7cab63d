"""`seqrl rollout --show-plan` and `--predict H`: the TT planner's plan beside the video, its model's predictions."""

import ctypes.util
import json

import gymnasium as gym
import numpy as np
import pytest
from seqrl.agents.bundled import BUNDLED_ROOT
from seqrl.planners import load_agent

TINY_TT = ("--agent", "tt", "--beam-width", "2", "--horizon", "2", "--episodes", "1", "--threads", "1")
offscreen_gl = pytest.mark.skipif(
    not (ctypes.util.find_library("EGL") or ctypes.util.find_library("OSMesa")), reason="no offscreen OpenGL"
)


def returns(log):
    return [json.loads(line)["return"] for line in log.read_text().splitlines()]


def test_planner_exposes_the_rest_of_its_plan_and_open_loop_predictions():
    env = gym.make("Hopper-v5")
    agent = load_agent(BUNDLED_ROOT / "hopper-tt", env, horizon=3, beam_width=2, plan_freq=2, max_context_transitions=2)
    observation, _ = env.reset(seed=0)
    agent.reset(seed=0)
    assert agent.plan(0) is None  # no plan before the first step
    observations, actions, rewards, plan_lengths = [observation], [], [], []
    for _ in range(4):
        action = agent.act(observation)
        observation, reward, *_ = env.step(action)
        agent.observe(reward)
        observations.append(observation)
        actions.append(action)
        rewards.append(reward)
        plan_lengths.append(len(agent.plan(0)))
    assert plan_lengths == [2, 1, 2, 1]  # a plan of 3 states, replanned every 2 steps
    assert agent.plan(0).shape[1] == 11
    observations, actions, rewards = np.array(observations), np.array(actions), np.array(rewards)
    predicted = agent.predict(observations[:2], actions[:4], rewards[:1])  # from step 1, 3 steps ahead
    assert predicted[0].shape == (3, 11) and predicted[1].shape == (3,)
    again = agent.predict(observations[:2], actions[:4], rewards[:1])
    assert all(np.array_equal(a, b) for a, b in zip(predicted, again))  # argmax tokens: no random stream
    assert np.abs(predicted[0][0] - observations[2]).mean() < np.abs(observations[2]).mean()  # a trained model


def test_predict_plots_beside_the_log_and_leaves_returns_alone(tmp_path, seqrl):
    pytest.importorskip("matplotlib")
    image = pytest.importorskip("PIL.Image")
    plain = seqrl("rollout", "--env", "Hopper-v5", *TINY_TT, "--max-steps", "8", "--log", "plain.jsonl", "--quiet")
    assert plain.returncode == 0, plain.stderr
    run = seqrl("rollout", "--env", "Hopper-v5", *TINY_TT, "--max-steps", "8", "--log", "runs.jsonl", "--predict", "3")
    assert run.returncode == 0, run.stderr
    assert "predictions: runs-predict.png (episode 0, 3 steps ahead)" in run.stdout
    assert returns(tmp_path / "runs.jsonl") == returns(tmp_path / "plain.jsonl")
    with image.open(tmp_path / "runs-predict.png") as picture:
        assert picture.format == "PNG"
        pixels = np.asarray(picture.convert("L"), dtype=float)
    assert pixels.shape[0] > 400 and pixels.std() > 5  # five labelled panels, not a blank canvas


@offscreen_gl
def test_show_plan_films_the_plan_beside_the_episode_and_leaves_returns_alone(tmp_path, seqrl):
    imageio = pytest.importorskip("imageio.v2")
    pytest.importorskip("imageio_ffmpeg")
    common = ("rollout", "--env", "Hopper-v5", *TINY_TT, "--max-steps", "6", "--quiet")
    plain = seqrl(*common, "--video", "plain.mp4", "--log", "plain.jsonl")
    assert plain.returncode == 0, plain.stderr
    shown = seqrl(*common, "--video", "plan.mp4", "--log", "plan.jsonl", "--show-plan")
    assert shown.returncode == 0, shown.stderr
    assert returns(tmp_path / "plan.jsonl") == returns(tmp_path / "plain.jsonl")
    plain_video, plan_video = imageio.get_reader(tmp_path / "plain.mp4"), imageio.get_reader(tmp_path / "plan.mp4")
    assert plain_video.count_frames() == plan_video.count_frames() == 6
    real, both = plain_video.get_data(5).astype(float), plan_video.get_data(5).astype(float)
    height, width, _ = real.shape
    assert both.shape == (height, 2 * width, 3)  # the real frame | the plan's states
    assert np.abs(both[:, :width] - real).mean() < 5  # the left half is the plain video (up to compression)
    plan_half = both[:, width:]
    assert plan_half.std() > 5  # floor and the predicted hopper, from the same camera, near where the real one is
    assert np.abs(plan_half - real).mean() < 20


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--agent", "tt", "--show-plan"), "--show-plan draws the plan beside the --video frames; add --video"),
        (("--agent", "random", "--video", "x.mp4", "--show-plan"), "--show-plan needs a model of the env"),
        (("--agent", "dt", "--log", "x.jsonl", "--predict", "3"), "--predict needs a model of the env"),
        (("--agent", "tt", "--predict", "3"), "--predict draws its plot beside --video or --log"),
        (("--checkpoint", "bundled:hopper-dt", "--log", "x.jsonl", "--predict", "3"), "hopper-dt agent has none"),
    ],
)
def test_plan_flags_refuse_agents_without_a_model_in_one_line(seqrl, tmp_path, flags, message):
    run = seqrl("rollout", "--env", "Hopper-v5", "--episodes", "1", "--max-steps", "2", *flags)
    assert run.returncode == 1, run.stdout
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "x.jsonl").exists()
