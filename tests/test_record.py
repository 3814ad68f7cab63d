"""`seqrl rollout --record`: the episodes come back through minari and seqrl's loader, and replay in the env."""

import json
from contextlib import closing

import minari
import numpy as np
from seqrl.envs.datasets import load_dataset
from seqrl.envs.families import FAMILIES
from seqrl.envs.make import make_env


def test_record_round_trip(seqrl, tmp_path, monkeypatch):
    done = seqrl(
        "rollout",
        "--env",
        "Hopper-v5",
        "--episodes",
        3,
        "--seed",
        5,
        "--max-steps",
        25,
        "--num-envs",
        2,
        "--log",
        "runs.jsonl",
        "--record",
        "datasets",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    logged = {r["seed"]: r for r in map(json.loads, (tmp_path / "runs.jsonl").read_text().splitlines())}
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    dataset = minari.load_dataset("seqrl/hopper/rollout-v0")
    assert dataset.spec.env_spec.id == "Hopper-v5" and dataset.total_episodes == 3
    seeds = [m["seed"] for m in dataset.storage.get_episode_metadata(dataset.episode_indices)]
    assert sorted(seeds) == [5, 6, 7]
    env = make_env("Hopper-v5")
    for seed, episode in zip(seeds, dataset.iterate_episodes()):
        record = logged[seed]
        assert len(episode.actions) == record["length"] and len(episode.observations) == record["length"] + 1
        assert np.isclose(episode.rewards.sum(), record["return"])
        assert (episode.terminations[-1], episode.truncations[-1]) == (record["terminated"], record["truncated"])
        assert not (episode.terminations[:-1].any() or episode.truncations[:-1].any())
        observation, info = env.reset(seed=seed)  # replaying the actions gives back every observation and info
        steps = [env.step(action) for action in episode.actions]
        np.testing.assert_array_equal(np.stack([observation] + [step[0] for step in steps]), episode.observations)
        # one info row per observation, as Minari's collector writes them; the reset's lacks the reward terms
        np.testing.assert_array_equal(
            episode.infos["x_position"], [info["x_position"]] + [s[4]["x_position"] for s in steps]
        )
        np.testing.assert_array_equal(episode.infos["x_velocity"][1:], [step[4]["x_velocity"] for step in steps])
        assert np.isnan(episode.infos["x_velocity"][0])

    # Minari's own scoring and env recovery work on the recording, and agree with seqrl's log
    assert dataset.storage.metadata["ref_min_score"] == FAMILIES["hopper"].random_return  # D4RL's, named:
    assert "ref_min_score and ref_max_score: d4rl:hopper" in dataset.storage.metadata["description"]
    returns = np.array([episode.rewards.sum() for episode in dataset.iterate_episodes()])
    logged_scores = [logged[seed]["normalized_score"] for seed in seeds]
    np.testing.assert_allclose(100 * minari.get_normalized_score(dataset, returns), logged_scores)
    assert {logged[seed]["reference"] for seed in seeds} == {"d4rl:hopper"}
    assert dataset.spec.env_spec.max_episode_steps == 25  # the --max-steps cap, not Hopper's 1000
    with closing(dataset.recover_environment()) as recovered:
        assert recovered.spec.max_episode_steps == 25

    offline = load_dataset("seqrl/hopper/rollout-v0")
    assert offline.env_id == "Hopper-v5" and len(offline.episodes) == 3
    assert sorted(np.round(offline.returns, 3)) == sorted(np.round([r["return"] for r in logged.values()], 3))


def test_record_id_existing_dataset_and_resume_without_duplicates(seqrl, tmp_path, monkeypatch):
    common = (
        "rollout",
        "--env",
        "Hopper-v5",
        "--max-steps",
        10,
        "--record",
        "datasets",
        "--record-id",
        "me/hop/test-v1",
        "--log",
        "runs.jsonl",
        "--quiet",
    )
    assert seqrl(*common, "--episodes", 2).returncode == 0
    again = seqrl(*common, "--episodes", 3)
    assert again.returncode == 1 and "me/hop/test-v1 already exists" in again.stderr
    log = tmp_path / "runs.jsonl"
    log.write_text(log.read_text().splitlines(keepends=True)[0])  # as if a crash hit between recording and logging
    assert seqrl(*common, "--episodes", 3, "--resume").returncode == 0
    assert [json.loads(line)["episode"] for line in log.read_text().splitlines()] == [0, 1, 2]
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    dataset = minari.load_dataset("me/hop/test-v1")
    assert [m["seed"] for m in dataset.storage.get_episode_metadata(dataset.episode_indices)] == [0, 1, 2]
    bad = seqrl("rollout", "--env", "Hopper-v5", "--record", "datasets", "--record-id", "no version")
    assert bad.returncode == 1 and "not a Minari dataset id" in bad.stderr
