"""The agents bundled inside the package load and act through the installed command."""

import json

import pytest

from seqrl.agents.bundled import BUNDLED_ROOT, bundled_checkpoint, bundled_methods
from seqrl.planners.checkpoint import file_digest

BUNDLED = sorted(path.name for path in BUNDLED_ROOT.iterdir() if path.is_dir()) if BUNDLED_ROOT.is_dir() else []
ENV_OF = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5", "ant": "Ant-v5"}


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
    explicit = seqrl("rollout", "--env", env_id, "--agent", method, "--episodes", 2, "--max-steps", 30,
                     "--threads", 1, "--log", "explicit.jsonl")
    assert explicit.returncode == 0, explicit.stderr
    assert f"from bundled:{name}" in explicit.stdout
    records = [json.loads(line) for line in (tmp_path / "explicit.jsonl").read_text().splitlines()]
    assert [r["length"] for r in records] == [30, 30] or any(r["terminated"] for r in records)
    assert records[0]["config"]["checkpoint_digest"] == file_digest(BUNDLED_ROOT / name / "model.safetensors")

    if default.name == name:  # with no --agent, the env's default bundled agent runs and gives the same episodes
        implicit = seqrl("rollout", "--env", env_id, "--episodes", 2, "--max-steps", 30, "--threads", 1, "--log", "implicit.jsonl")
        assert implicit.returncode == 0, implicit.stderr
        again = [json.loads(line) for line in (tmp_path / "implicit.jsonl").read_text().splitlines()]
        assert [r["return"] for r in again] == [r["return"] for r in records]


def test_asking_for_a_method_that_is_not_bundled_is_a_one_line_error(seqrl):
    missing = next(m for m in ("tt", "dt") if m not in bundled_methods("Walker2d-v5"))
    done = seqrl("rollout", "--env", "Walker2d-v5", "--agent", missing, "--episodes", 1)
    assert done.returncode == 1
    assert f"no bundled {missing} agent for Walker2d-v5" in done.stderr and "Traceback" not in done.stderr
