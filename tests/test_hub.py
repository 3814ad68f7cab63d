"""Checkpoints from the Hugging Face hub (a real HF cache layout, offline), `bundled:NAME`, and missing paths."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from seqrl import DecisionTransformerModel, SeqrlError
from seqrl.agents.bundled import BUNDLED_ROOT

REPO = "seqrl-test/hopper-dt"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_hub(tmp_path: Path) -> dict[str, str]:
    """An HF cache holding REPO at `main` (the layout huggingface_hub writes), and the env that reads it offline."""
    cache = tmp_path / "hf" / "hub"
    repo = cache / f"models--{REPO.replace('/', '--')}"
    shutil.copytree(BUNDLED_ROOT / "hopper-dt", repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def test_rollout_and_info_read_a_hub_checkpoint_from_the_offline_cache(seqrl, offline_hub, tmp_path):
    log = tmp_path / "episodes.jsonl"
    result = seqrl(
        "rollout",
        "--env",
        "Hopper-v5",
        "--checkpoint",
        f"hf:{REPO}",
        "--episodes",
        "1",
        "--max-steps",
        "5",
        "--threads",
        "1",
        "--quiet",
        "--log",
        log,
        env=offline_hub,
    )
    assert result.returncode == 0, result.stderr
    assert f"hf:{REPO}" in log.read_text()
    info = seqrl("info", f"hf:{REPO}@main", env=offline_hub)
    assert info.returncode == 0, info.stderr
    assert "Decision Transformer" in info.stdout and "Hopper-v5" in info.stdout


def test_from_pretrained_takes_a_hub_id_from_the_offline_cache(offline_hub):
    code = f"from seqrl import DecisionTransformerModel as M; print(M.from_pretrained({REPO!r}).config.state_dim)"
    environment = offline_hub | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(offline_hub["HF_HOME"]),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "11"


def test_from_pretrained_prefers_a_local_directory_to_the_hub(tmp_path, monkeypatch):
    shutil.copytree(BUNDLED_ROOT / "hopper-dt", tmp_path / REPO)
    monkeypatch.chdir(tmp_path)
    assert DecisionTransformerModel.from_pretrained(REPO).config.state_dim == 11


def test_hub_checkpoint_offline_and_not_cached_is_a_one_line_error(seqrl, offline_hub):
    result = seqrl("info", "hf:seqrl-test/not-cached", env=offline_hub)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unreachable" in result.stderr and "HF_HUB_OFFLINE" in result.stderr


def test_missing_local_path_on_the_command_line_is_an_error_naming_it(seqrl, offline_hub):
    result = seqrl(
        "rollout", "--env", "Hopper-v5", "--checkpoint", "runs/tt-hopper", "--episodes", "1", env=offline_hub
    )
    assert result.returncode == 1
    assert "runs/tt-hopper not found" in result.stderr and "hf:ORG/NAME" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bundled_names_as_logs_write_them_are_checkpoints(seqrl):
    result = seqrl("info", "bundled:hopper-dt")
    assert result.returncode == 0, result.stderr
    assert "Decision Transformer" in result.stdout
    unknown = seqrl("info", "bundled:walker-dt")
    assert unknown.returncode == 1 and "hopper-dt" in unknown.stderr


def test_resolve_rejects_an_unknown_bundled_name():
    from seqrl.planners.checkpoint import resolve_checkpoint

    with pytest.raises(SeqrlError, match="no bundled checkpoint"):
        resolve_checkpoint("bundled:nothing")
