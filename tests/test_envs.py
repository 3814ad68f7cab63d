"""seqrl.envs.make and seqrl.envs.families on real MuJoCo environments."""

import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from seqrl import SeqrlError
from seqrl.envs.families import FAMILIES, dt_target_return, normalized_score
from seqrl.envs.make import check_box_spaces, make_env, make_vector_env

REFERENCE_RETURNS = {name: (family.random_return, family.expert_return) for name, family in FAMILIES.items()}


@pytest.mark.parametrize("env_id", ["Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5"])
def test_make_env_builds_seeded_mujoco_envs(env_id):
    env = make_env(env_id)
    first, _ = env.reset(seed=7)
    env.step(env.action_space.sample())
    again, _ = env.reset(seed=7)
    other, _ = env.reset(seed=8)
    env.close()
    assert isinstance(env.observation_space, gym.spaces.Box) and isinstance(env.action_space, gym.spaces.Box)
    assert first.shape == env.observation_space.shape
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    "typo, expected",
    [
        ("Hoper-v5", "Hopper-v5"),
        ("halfcheetah-v5", "HalfCheetah-v5"),
        ("Walker2d-v9", "Walker2d-v5"),
    ],
)
def test_unknown_env_names_the_closest_ids(typo, expected):
    with pytest.raises(SeqrlError) as error:
        make_env(typo)
    assert expected in str(error.value) and typo in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.filterwarnings("ignore:.*out of date:DeprecationWarning")
def test_env_that_gymnasium_cannot_build_is_a_seqrl_error():
    with pytest.raises(SeqrlError, match="Hopper-v3"):
        make_env("Hopper-v3")  # registered, but needs mujoco-py


def test_non_box_spaces_are_rejected():
    with pytest.raises(SeqrlError, match="Discrete"):
        make_env("CartPole-v1")
    image = gym.spaces.Box(0, 1, shape=(4, 4))
    flat = gym.spaces.Box(-1, 1, shape=(3,))
    with pytest.raises(SeqrlError, match="observation"):
        check_box_spaces(image, flat, "Image-v0")
    check_box_spaces(flat, flat, "Flat-v0")


def test_vector_env_matches_single_envs_and_resets_only_masked_slots():
    envs = make_vector_env("Hopper-v5", 3)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.DISABLED
    observations, _ = envs.reset(seed=[10, 11, 12])
    single = make_env("Hopper-v5")
    for slot, seed in enumerate([10, 11, 12]):
        np.testing.assert_array_equal(observations[slot], single.reset(seed=seed)[0])
    stepped, *_ = envs.step(np.zeros((3, 3), dtype=np.float32))
    mask = np.array([False, True, False])
    after, _ = envs.reset(seed=[0, 11, 0], options={"reset_mask": mask})
    np.testing.assert_array_equal(after[1], observations[1])
    np.testing.assert_array_equal(after[[0, 2]], stepped[[0, 2]])
    envs.close()
    single.close()


def test_vector_env_rejects_bad_ids_and_sizes():
    with pytest.raises(SeqrlError, match="Hopper-v5"):
        make_vector_env("Hoper-v5", 2)
    with pytest.raises(SeqrlError, match="num_envs"):
        make_vector_env("Hopper-v5", 0)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_building_envs_leaves_terminal_and_directory_clean(tmp_path):
    code = (
        "from seqrl.envs.make import make_env, make_vector_env\n"
        "env = make_env('HalfCheetah-v5'); env.reset(seed=0); env.step(env.action_space.sample())\n"
        "make_vector_env('Ant-v5', 2).reset(seed=[0, 1])\n"
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert list(tmp_path.iterdir()) == []  # no MUJOCO_LOG.TXT


def test_real_mujoco_warnings_still_reach_the_user(tmp_path):
    code = (
        "import numpy as np\n"
        "from seqrl.envs.make import make_env\n"
        "env = make_env('Hopper-v5'); env.reset(seed=0)\n"
        "env.unwrapped.data.qvel[:] = 1e30\n"  # an exploding simulation: MuJoCo warns
        "env.step(np.zeros(3, dtype=np.float32))\n"
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "MuJoCo warning" in result.stderr and "QVEL" in result.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


@pytest.mark.parametrize(
    "env_id",
    [
        "Hopper-v5",
        "hopper-medium-v2",
        "HalfCheetah-v4",
        "halfcheetah-expert-v2",
        "Walker2d-v5",
        "walker2d-medium-replay-v2",
        "Ant-v5",
        "ant-random-v0",
    ],
)
def test_normalized_score_is_0_for_random_and_100_for_expert(env_id):
    family = env_id.split("-")[0].lower()
    random, expert = REFERENCE_RETURNS[family]
    assert normalized_score(env_id, random) == pytest.approx(0.0)
    assert normalized_score(env_id, expert) == pytest.approx(100.0)
    assert normalized_score(env_id, (random + expert) / 2) == pytest.approx(50.0)
    assert normalized_score(env_id, random - (expert - random)) == pytest.approx(-100.0)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "InvertedPendulum-v5", "Humanoid-v5", "Swimmer-v5"])
def test_normalized_score_is_none_without_reference_returns(env_id):
    assert normalized_score(env_id, 1000.0) is None


@pytest.mark.parametrize("env_id", ["Hopper-v5", "hopper-medium-v2", "HOPPER-expert-v2", "d4rl/hopper-v0"])
def test_dt_target_return_is_found_for_every_spelling_of_a_family(env_id):
    assert dt_target_return(env_id) == 3600.0


def test_reference_returns_match_the_shared_datasets_readme(shared_datasets):
    readme = shared_datasets / "README.md"
    found = re.findall(r"(\w+)\s+random\s+(-?\d+(?:\.\d+)?),\s+expert\s+(-?\d+(?:\.\d+)?)", readme.read_text())
    assert {name.lower(): (float(random), float(expert)) for name, random, expert in found} == REFERENCE_RETURNS
