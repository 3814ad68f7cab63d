"""`seqrl rollout` with Decision Transformer checkpoints: target return, statistics from a dataset, errors."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from seqrl import DecisionTransformerConfig, DecisionTransformerModel


def plain_hopper_checkpoint(directory: Path) -> Path:
    """A small random DT saved as a plain Hugging Face directory (no seqrl.json) for Hopper."""
    torch.manual_seed(0)
    config = DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=32, n_layer=2, max_ep_len=1000)
    DecisionTransformerModel(config).save_pretrained(directory)
    return directory


@pytest.fixture
def rollout(seqrl):
    """Run the installed `seqrl rollout` command on an env, one thread, quiet."""

    def run(*arguments: str, env_id: str = "Hopper-v5", env: dict | None = None) -> subprocess.CompletedProcess:
        return seqrl("rollout", "--env", env_id, "--threads", "1", "--quiet", *arguments, env=env)

    return run


def test_plain_checkpoint_rolls_out_with_dataset_statistics(tmp_path, rollout, shared_datasets):
    checkpoint = plain_hopper_checkpoint(tmp_path / "ckpt")
    log = tmp_path / "episodes.jsonl"
    result = rollout(
        "--checkpoint",
        str(checkpoint),
        "--dataset",
        "zoo/hopper/medium-v0",
        "--target-return",
        "1234",
        "--episodes",
        "2",
        "--num-envs",
        "2",
        "--max-steps",
        "25",
        "--log",
        str(log),
        env={"MINARI_DATASETS_PATH": str(shared_datasets)},
    )
    assert result.returncode == 0, result.stderr
    episodes = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(episodes) == 2
    for episode in episodes:
        assert episode["config"]["target_return"] == 1234.0
        assert episode["config"]["state_statistics"] == "zoo/hopper/medium-v0"
        assert episode["config"]["checkpoint_digest"]


def test_plain_checkpoint_without_dataset_is_a_one_line_error(tmp_path, rollout):
    result = rollout("--checkpoint", str(plain_hopper_checkpoint(tmp_path / "ckpt")), "--episodes", "1")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and "--dataset" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_checkpoint_for_another_env_is_a_one_line_error(tmp_path, rollout):
    result = rollout(
        "--checkpoint", str(plain_hopper_checkpoint(tmp_path / "ckpt")), "--episodes", "1", env_id="HalfCheetah-v5"
    )
    assert result.returncode == 1
    assert "state_dim 11" in result.stderr and len(result.stderr.strip().splitlines()) == 1
