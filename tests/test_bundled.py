"""The agents bundled inside the package load and act through the installed command."""

import json

import pytest
from seqrl.agents.bundled import BUNDLED_ROOT, bundled_checkpoint, bundled_methods
from seqrl.planners.checkpoint import file_digest

BUNDLED = sorted(path.name for path in BUNDLED_ROOT.iterdir() if path.is_dir()) if BUNDLED_ROOT.is_dir() else []
ENV_OF = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5", "ant": "Ant-v5"}
STEPS = 60  # long enough for a random Hopper to fall (after about 20 steps) and a trained one to move on
MARGIN = 50.0  # over the best random episode's return


def read_log(path) -> list[dict]:
    """The records of an episode log."""
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("env_id", ["Hopper-v5", "HalfCheetah-v5"])
def test_the_package_bundles_a_dt_default(env_id):
    assert bundled_methods(env_id)[:1] == ["dt"], f"the package should ship a DT as the default for {env_id}"
    assert bundled_checkpoint(env_id, "random") is None


def test_the_package_bundles_a_hopper_tt():
    assert "tt" in bundled_methods("Hopper-v5")


def test_bundled_checkpoints_fit_the_size_budget():
    size = sum(path.stat().st_size for path in BUNDLED_ROOT.rglob("*") if path.is_file())
    assert size <= 20_000_000, f"bundled checkpoints take {size / 1e6:.1f} MB; the budget is 20 MB"


@pytest.mark.parametrize("name", BUNDLED)
def test_each_bundled_agent_is_the_default_and_acts(seqrl, tmp_path, name):
    family, method = name.rsplit("-", 1)
    env_id = ENV_OF[family]
    default = bundled_checkpoint(env_id)
    common = ("--env", env_id, "--episodes", 2, "--num-envs", 2, "--max-steps", STEPS, "--threads", 1)
    explicit = seqrl("rollout", *common, "--agent", method, "--log", "explicit.jsonl")
    assert explicit.returncode == 0, explicit.stderr
    assert f"from bundled:{name}" in explicit.stdout
    records = read_log(tmp_path / "explicit.jsonl")
    assert records[0]["config"]["checkpoint_digest"] == file_digest(BUNDLED_ROOT / name / "model.safetensors")
    # a trained agent stays up for the whole window and earns more than a random one on the same seeds
    assert seqrl("rollout", *common, "--agent", "random", "--log", "random.jsonl").returncode == 0
    random_best = max(r["return"] for r in read_log(tmp_path / "random.jsonl"))
    assert [r["length"] for r in records] == [STEPS, STEPS]
    assert min(r["return"] for r in records) > random_best + MARGIN, (records, random_best)

    if default.name == name:  # with no --agent, the env's default bundled agent runs and gives the same episodes
        implicit = seqrl("rollout", *common, "--log", "implicit.jsonl")
        assert implicit.returncode == 0, implicit.stderr
        assert [r["return"] for r in read_log(tmp_path / "implicit.jsonl")] == [r["return"] for r in records]


def test_asking_for_a_method_that_is_not_bundled_is_a_one_line_error(seqrl):
    missing = next(m for m in ("tt", "dt") if m not in bundled_methods("Walker2d-v5"))
    done = seqrl("rollout", "--env", "Walker2d-v5", "--agent", missing, "--episodes", 1)
    assert done.returncode == 1
    assert f"no bundled {missing} agent for Walker2d-v5" in done.stderr and "Traceback" not in done.stderr
