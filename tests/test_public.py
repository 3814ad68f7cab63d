"""Public hub checkpoints: published DT statistics, statistics given by flag or file, TT without bins, `seqrl import`.

Each test builds a real Hugging Face cache (the layout huggingface_hub writes) holding tiny random models under the
public repo ids, and reads it with HF_HUB_OFFLINE=1: nothing is downloaded.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from seqrl import DecisionTransformerConfig, DecisionTransformerModel
from seqrl.planners.decision.published import PUBLISHED
from seqrl.planners.trajectory.config import TrajectoryTransformerConfig
from seqrl.planners.trajectory.model import TrajectoryTransformerModel

HOPPER_MEDIUM = "edbeeching/decision-transformer-gym-hopper-medium"
PLAIN_TT = "CarlCochet/trajectory-transformer-hopper-medium-v2"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
HOPPER_MEAN = "1.3,-0.08,-0.5,-0.07,0.05,2.1,-0.15,0.01,-0.28,-0.19,-0.28"
HOPPER_STD = "0.18,0.05,0.21,0.15,0.61,0.85,1.45,0.68,1.54,1.62,5.61"


def plain_dt(directory: Path) -> Path:
    """A tiny random DT with Hopper's sizes, saved as edbeeching checkpoints are (config.json, pytorch_model.bin)."""
    torch.manual_seed(0)
    config = DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=16, n_layer=1, n_head=1, max_ep_len=1000)
    model = DecisionTransformerModel(config)
    config.save_pretrained(directory)
    torch.save(model.state_dict_to_save(), directory / "pytorch_model.bin")
    return directory


def plain_tt(directory: Path) -> Path:
    """A tiny random TT with Hopper's sizes and no discretizer bins, as the CarlCochet checkpoints ship."""
    torch.manual_seed(0)
    config = TrajectoryTransformerConfig(
        vocab_size=10, block_size=47, observation_dim=11, action_dim=3, transition_dim=16, n_layer=1, n_head=1, n_embd=8
    )
    TrajectoryTransformerModel(config).save_pretrained(directory)
    return directory


@pytest.fixture
def hub(tmp_path: Path) -> dict[str, str]:
    """An HF cache holding the public repo ids at `main`, and the env that reads it offline."""
    cache = tmp_path / "hf" / "hub"
    for repo_id, build in ((HOPPER_MEDIUM, plain_dt), (PLAIN_TT, plain_tt)):
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / COMMIT
        snapshot.mkdir(parents=True)
        build(snapshot)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMIT)
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def rollout(seqrl, checkpoint: str, log: Path, *arguments: str, env: dict[str, str] | None = None):
    """`seqrl rollout` of one short Hopper-v5 episode, logged."""
    return seqrl(
        "rollout",
        "--env",
        "Hopper-v5",
        "--checkpoint",
        checkpoint,
        "--episodes",
        "1",
        "--max-steps",
        "8",
        "--threads",
        "1",
        "--quiet",
        "--log",
        log,
        *arguments,
        env=env,
    )


def logged(log: Path) -> dict:
    """The one episode record of a log."""
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    return record


def test_hopper_medium_runs_out_of_the_box_with_the_published_statistics(seqrl, hub, tmp_path):
    result = rollout(seqrl, f"hf:{HOPPER_MEDIUM}", tmp_path / "log.jsonl", env=hub)
    assert result.returncode == 0, result.stderr
    config = logged(tmp_path / "log.jsonl")["config"]
    assert config["state_statistics"] == f"published at https://huggingface.co/{HOPPER_MEDIUM}"
    assert (config["target_return"], config["return_scale"]) == (3600.0, 1000.0)
    code = (
        "from seqrl.envs.make import make_env; from seqrl.planners import load_agent; "
        f"agent = load_agent('hf:{HOPPER_MEDIUM}', make_env('Hopper-v5')); print(agent.state_mean.tolist())"
    )
    environment = {**os.environ, **hub}
    loaded = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    expected = torch.tensor(PUBLISHED[HOPPER_MEDIUM].state_mean, dtype=torch.float32).tolist()
    assert json.loads(loaded.stdout) == expected


def test_plain_checkpoint_takes_statistics_from_flags_or_a_json_file(seqrl, tmp_path):
    checkpoint = str(plain_dt(tmp_path / "plain"))
    by_flags = rollout(
        seqrl, checkpoint, tmp_path / "flags.jsonl", f"--state-mean={HOPPER_MEAN}", "--state-std", HOPPER_STD
    )
    assert by_flags.returncode == 0, by_flags.stderr
    statistics = tmp_path / "stats.json"
    mean, std = ([float(value) for value in text.split(",")] for text in (HOPPER_MEAN, HOPPER_STD))
    statistics.write_text(json.dumps({"state_mean": mean, "state_std": std}))
    by_file = rollout(seqrl, checkpoint, tmp_path / "file.jsonl", "--state-statistics", statistics)
    assert by_file.returncode == 0, by_file.stderr
    flags, file = logged(tmp_path / "flags.jsonl"), logged(tmp_path / "file.jsonl")
    assert flags["config"]["state_statistics"] == "--state-mean/--state-std"
    assert file["config"]["state_statistics"] == str(statistics)
    assert flags["return"] == file["return"]  # the same numbers, given two ways


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--state-mean", HOPPER_MEAN.rsplit(",", 1)[0], "--state-std", HOPPER_STD), "has 10 values but Hopper-v5"),
        (("--state-mean", HOPPER_MEAN, "--state-std", HOPPER_STD.replace("0.18", "0")), "not positive and finite"),
        (("--state-mean", HOPPER_MEAN), "--state-mean and --state-std come together"),
    ],
)
def test_bad_state_statistics_are_a_one_line_error(seqrl, tmp_path, arguments, message):
    result = rollout(seqrl, str(plain_dt(tmp_path / "plain")), tmp_path / "log.jsonl", *arguments)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_import_writes_a_checkpoint_that_rolls_out_offline_alone(seqrl, hub, tmp_path):
    out = tmp_path / "imported"
    imported = seqrl("import", f"hf:{HOPPER_MEDIUM}", "--out", out, env=hub)
    assert imported.returncode == 0, imported.stderr
    assert {"config.json", "model.safetensors", "seqrl.json"} <= {path.name for path in out.iterdir()}
    meta = json.loads((out / "seqrl.json").read_text())
    assert meta["policy"] == {"target_return": 3600.0, "return_scale": 1000.0}
    from_hub = rollout(seqrl, f"hf:{HOPPER_MEDIUM}", tmp_path / "hub.jsonl", env=hub)
    assert from_hub.returncode == 0, from_hub.stderr
    no_cache = {"HF_HOME": str(tmp_path / "empty"), "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    alone = rollout(seqrl, str(out), tmp_path / "alone.jsonl", env=no_cache)
    assert alone.returncode == 0, alone.stderr
    assert logged(tmp_path / "alone.jsonl")["return"] == logged(tmp_path / "hub.jsonl")["return"]
    again = seqrl("import", f"hf:{HOPPER_MEDIUM}", "--out", out, env=hub)
    assert again.returncode == 1 and "not empty" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_plain_tt_without_bins_is_an_error_naming_dataset(seqrl, hub, tmp_path):
    for result in (
        rollout(seqrl, f"hf:{PLAIN_TT}", tmp_path / "log.jsonl", env=hub),
        seqrl("import", f"hf:{PLAIN_TT}", "--out", tmp_path / "tt", env=hub),
    ):
        assert result.returncode == 1
        assert "ship no bins" in result.stderr and "--dataset" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    statistics = rollout(
        seqrl, f"hf:{PLAIN_TT}", tmp_path / "log.jsonl", "--state-mean", HOPPER_MEAN, "--state-std", HOPPER_STD, env=hub
    )
    assert statistics.returncode == 1 and "apply to Decision Transformers" in statistics.stderr


def test_import_fits_a_plain_tt_its_bins_from_the_dataset(seqrl, hub, tmp_path, shared_datasets):
    out = tmp_path / "tt"
    datasets = {**hub, "MINARI_DATASETS_PATH": str(shared_datasets)}
    imported = seqrl("import", f"hf:{PLAIN_TT}", "--out", out, "--dataset", "zoo/hopper/medium-v0", env=datasets)
    assert imported.returncode == 0, imported.stderr
    assert (out / "discretizer.npz").exists()
    assert json.loads((out / "seqrl.json").read_text())["datasets"] == ["zoo/hopper/medium-v0"]
    result = rollout(seqrl, str(out), tmp_path / "log.jsonl", "--horizon", "2", "--beam-width", "2")
    assert result.returncode == 0, result.stderr
    assert logged(tmp_path / "log.jsonl")["config"]["discretizer"] == str(out / "discretizer.npz")
