"""Minari interop: `--download` of ids that are not local (never over the network here), and reference scores."""

import json
import warnings
from contextlib import closing

import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer
from seqrl import SeqrlError
from seqrl.agents.loop import evaluate
from seqrl.envs.datasets import dataset_reference, load_dataset
from seqrl.envs.families import normalized_score
from seqrl.envs.make import make_env
from seqrl.planners import load_agent

REMOTE_ID = "mujoco/hopper/medium-v0"  # on Minari's servers, never under a test's datasets root
UNREACHABLE = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}  # minari's remote on a closed port


def _tiny_dataset(root, dataset_id: str, reference: tuple[float, float] | None = None, episodes: int = 2):
    """A Hopper-v5 Minari dataset of short random episodes under `root`, with these ref_min/ref_max scores."""
    rng = np.random.default_rng(0)
    buffers = [
        EpisodeBuffer(
            seed=i,
            observations=rng.normal(size=(6, 11)),
            actions=rng.uniform(-1, 1, size=(5, 3)).astype(np.float32),
            rewards=rng.normal(size=5) + 10 * i,
            terminations=np.array([False] * 4 + [True]),
            truncations=np.zeros(5, bool),
        )
        for i in range(episodes)
    ]
    scores = {} if reference is None else {"ref_min_score": reference[0], "ref_max_score": reference[1]}
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore", UserWarning)
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        return minari.create_dataset_from_buffers(dataset_id, buffers, env="Hopper-v5", **scores)


def test_an_id_not_held_locally_names_minari_download_and_the_flag(seqrl, tmp_path):
    done = seqrl("train", "dt", "--dataset", REMOTE_ID, "--out", "run", env={"MINARI_DATASETS_PATH": str(tmp_path)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"minari download {REMOTE_ID}" in done.stderr and "--download" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_download_with_the_remote_unreachable_is_one_line(seqrl, tmp_path):
    done = seqrl(
        "train",
        "dt",
        "--dataset",
        REMOTE_ID,
        "--download",
        "--out",
        "run",
        env={"MINARI_DATASETS_PATH": str(tmp_path / "root"), **UNREACHABLE},
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"cannot download {REMOTE_ID}" in done.stderr and "unreachable" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "run").exists()


def test_download_fetches_the_id_into_the_datasets_root_then_loads_it(tmp_path, monkeypatch):
    fetched = []

    def download_dataset(dataset_id: str, force_download: bool = False) -> None:  # stands in for the remote
        fetched.append(dataset_id)
        _tiny_dataset(tmp_path, dataset_id)

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    monkeypatch.setattr(minari, "download_dataset", download_dataset)
    with pytest.raises(SeqrlError, match="add --download"):
        load_dataset(REMOTE_ID)
    assert fetched == []
    data = load_dataset(REMOTE_ID, download=True)
    assert fetched == [REMOTE_ID] and data.env_id == "Hopper-v5" and len(data.episodes) == 2
    assert len(load_dataset(REMOTE_ID, download=True).episodes) == 2 and fetched == [REMOTE_ID]  # local now


def test_download_errors_of_minari_become_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    for key, value in UNREACHABLE.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SeqrlError, match=r"hf://farama-minari is unreachable \(ConnectionError\)"):
        load_dataset(REMOTE_ID, download=True)

    def not_there(dataset_id: str, force_download: bool = False) -> None:
        raise ValueError(f"Couldn't find any version for dataset {dataset_id} in the remote Farama server.")

    monkeypatch.setattr(minari, "download_dataset", not_there)
    with pytest.raises(SeqrlError, match="Couldn't find any version"):
        load_dataset(REMOTE_ID, download=True)


def test_scores_use_the_datasets_own_references_else_d4rls(tmp_path, monkeypatch):
    scored = _tiny_dataset(tmp_path, "me/hopper/scored-v0", reference=(-5.0, 45.0))
    _tiny_dataset(tmp_path, "me/hopper/plain-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    reference = dataset_reference("me/hopper/scored-v0")
    assert (reference.min_return, reference.max_return, reference.source) == (-5.0, 45.0, "minari:me/hopper/scored-v0")
    assert dataset_reference(str(tmp_path / "me/hopper/scored-v0")) == reference  # a directory too
    assert dataset_reference("me/hopper/plain-v0") is None and dataset_reference("not/here-v0") is None
    assert dataset_reference("me/hopper/plain-v0,me/hopper/scored-v0") == reference

    stats = load_dataset("me/hopper/scored-v0").stats()
    returns = np.array([e.rewards.sum() for e in scored.iterate_episodes()])
    assert stats["reference"] == "minari:me/hopper/scored-v0"
    assert stats["normalized_score_mean"] == pytest.approx(100 * minari.get_normalized_score(scored, returns).mean())
    plain = load_dataset("me/hopper/plain-v0").stats()
    assert plain["reference"] == "d4rl:hopper"
    assert plain["normalized_score_mean"] == pytest.approx(np.mean([normalized_score("Hopper-v5", r) for r in returns]))


def test_rollout_logs_which_reference_its_scores_use(seqrl, tmp_path, monkeypatch):
    _tiny_dataset(tmp_path / "root", "me/hopper/scored-v0", reference=(-5.0, 45.0))
    done = seqrl(
        "rollout",
        "--env",
        "Hopper-v5",
        "--checkpoint",
        "bundled:hopper-dt",
        "--dataset",
        "me/hopper/scored-v0",
        "--episodes",
        1,
        "--max-steps",
        5,
        "--log",
        "runs.jsonl",
        env={"MINARI_DATASETS_PATH": str(tmp_path / "root")},
    )
    assert done.returncode == 0, done.stderr
    assert "reference returns: minari:me/hopper/scored-v0" in " ".join(done.stdout.split())
    line = json.loads((tmp_path / "runs.jsonl").read_text())
    assert line["reference"] == "minari:me/hopper/scored-v0"
    assert line["normalized_score"] == pytest.approx(100 * (line["return"] + 5.0) / 50.0)

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))  # without the checkpoint's training data
    with closing(make_env("Hopper-v5")) as env:
        agent = load_agent("bundled:hopper-dt", env)
        (result,) = evaluate(agent, env, 1, max_steps=5)
    assert agent.reference is None and result.reference == "d4rl:hopper"
    assert result.normalized_score == normalized_score("Hopper-v5", result.episode_return)
