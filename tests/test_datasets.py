"""seqrl.envs.datasets and `seqrl datasets`: tiny files in each format, bad inputs, the shared real datasets."""

import os
import pickle
import re
import shutil
from pathlib import Path

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.storage.datasets_root_dir import get_dataset_path
from seqrl import SeqrlError
from seqrl.envs.datasets import datasets_root, load_dataset, local_dataset_ids
from seqrl.envs.families import normalized_score
from seqrl.envs.make import make_env

MINARI_ID = "test/hopper/tiny-v0"


def hopper_rollouts(seeds: list[int], max_steps: list[int]) -> list[dict]:
    """Random-action Hopper-v5 episodes, with the T + 1 observations Minari stores."""
    env = make_env("Hopper-v5")
    env.action_space.seed(0)
    episodes = []
    for seed, limit in zip(seeds, max_steps):
        observations = [env.reset(seed=seed)[0]]
        actions, rewards, terminated = [], [], False
        while not terminated and len(actions) < limit:
            actions.append(env.action_space.sample())
            observation, reward, terminated, _, _ = env.step(actions[-1])
            observations.append(observation)
            rewards.append(reward)
        ends = np.zeros(len(actions), dtype=bool)
        episodes.append(
            {
                "observations": np.array(observations),
                "actions": np.array(actions),
                "rewards": np.array(rewards),
                "terminations": np.r_[ends[:-1], terminated],
                "truncations": np.r_[ends[:-1], not terminated],
            }
        )
    env.close()
    return episodes


@pytest.fixture(scope="module")
def rollouts() -> list[dict]:
    episodes = hopper_rollouts(seeds=[0, 1, 2], max_steps=[12, 400, 9])
    assert [e["terminations"][-1] for e in episodes] == [False, True, False]  # one cut off, one fallen, one cut off
    return episodes


def write_minari(root: Path, dataset_id: str, episodes: list[dict], observation_space: gym.Space | None = None) -> Path:
    """A Hopper-v5 Minari dataset written by minari itself; returns its directory."""
    buffers = [EpisodeBuffer(id=i, **episode) for i, episode in enumerate(episodes)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env="Hopper-v5",
            eval_env="Hopper-v5",
            observation_space=observation_space,
            algorithm_name="random",
            author="seqrl",
            author_email="seqrl@example.com",
            code_permalink="tests",
            description="tiny",
        )
    return root / dataset_id


def write_d4rl(path: Path, episodes: list[dict], **replace) -> Path:
    """A D4RL-style flat HDF5 file; the last episode keeps no end flag, as in a file cut mid-episode."""
    arrays = {
        "observations": np.concatenate([e["observations"][:-1] for e in episodes]),
        "actions": np.concatenate([e["actions"] for e in episodes]),
        "rewards": np.concatenate([e["rewards"] for e in episodes]),
        "terminals": np.concatenate([e["terminations"] for e in episodes]),
        "timeouts": np.concatenate([e["truncations"] for e in episodes]),
    }
    arrays["timeouts"][-1] = False
    arrays.update(replace)
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            if value is not None:
                file[key] = value
    return path


def dt_trajectories(episodes: list[dict]) -> list[dict]:
    """The Decision Transformer pickle layout: terminals only, next_observations alongside."""
    return [
        {
            "observations": e["observations"][:-1],
            "next_observations": e["observations"][1:],
            "actions": e["actions"],
            "rewards": e["rewards"],
            "terminals": e["terminations"],
        }
        for e in episodes
    ]


def write_pickle(path: Path, content) -> Path:
    path.write_bytes(pickle.dumps(content))
    return path


def assert_same_episodes(loaded, episodes: list[dict]):
    assert len(loaded) == len(episodes)
    for got, want in zip(loaded, episodes):
        np.testing.assert_array_equal(got.observations, want["observations"][:-1].astype(np.float32))
        np.testing.assert_array_equal(got.actions, want["actions"].astype(np.float32))
        np.testing.assert_array_equal(got.rewards, want["rewards"].astype(np.float32))
        np.testing.assert_array_equal(got.terminations, want["terminations"])
        np.testing.assert_array_equal(got.truncations, want["truncations"])
        assert got.observations.dtype == got.actions.dtype == got.rewards.dtype == np.float32
        assert got.terminations.dtype == got.truncations.dtype == bool


def test_d4rl_hdf5_splits_on_terminals_and_timeouts(tmp_path, rollouts):
    dataset = load_dataset(str(write_d4rl(tmp_path / "hopper.hdf5", rollouts)))
    assert_same_episodes(dataset.episodes, rollouts)  # the trailing partial episode comes back truncated
    assert dataset.env_id is None and dataset.sources == [str(tmp_path / "hopper.hdf5")]
    assert (dataset.obs_dim, dataset.act_dim) == (11, 3)


def test_dt_pickle_with_terminals_or_dones(tmp_path, rollouts):
    trajectories = dt_trajectories(rollouts)
    trajectories[1]["dones"] = trajectories[1].pop("terminals")
    dataset = load_dataset(str(write_pickle(tmp_path / "hopper.pkl", trajectories)))
    assert_same_episodes(dataset.episodes, rollouts)


def test_minari_id_and_directory_match_minari_itself(tmp_path, rollouts, monkeypatch):
    directory = write_minari(tmp_path, MINARI_ID, rollouts)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    by_id = load_dataset(MINARI_ID)
    oracle = [
        {
            "observations": e.observations,
            "actions": e.actions,
            "rewards": e.rewards,
            "terminations": e.terminations,
            "truncations": e.truncations,
        }
        for e in minari.load_dataset(MINARI_ID).iterate_episodes()
    ]
    assert_same_episodes(by_id.episodes, oracle)
    assert_same_episodes(by_id.episodes, rollouts)
    assert by_id.env_id == "Hopper-v5"
    for path in (directory, directory / "data"):
        assert_same_episodes(load_dataset(str(path)).episodes, rollouts)
    assert local_dataset_ids(tmp_path) == [MINARI_ID]


def test_datasets_root_is_minaris_root(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    assert datasets_root() == get_dataset_path()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "elsewhere"))
    assert datasets_root() == get_dataset_path()


def test_sources_combine_in_order(tmp_path, rollouts, monkeypatch):
    write_minari(tmp_path, MINARI_ID, rollouts)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    hdf5 = write_d4rl(tmp_path / "hopper.hdf5", rollouts[:2])
    pkl = write_pickle(tmp_path / "hopper.pkl", dt_trajectories(rollouts[2:]))
    dataset = load_dataset(f"{MINARI_ID}, {hdf5},{pkl}")
    assert dataset.sources == [MINARI_ID, str(hdf5), str(pkl)]
    assert dataset.env_id == "Hopper-v5"
    assert_same_episodes(dataset.episodes, rollouts + rollouts[:2] + rollouts[2:])
    lengths = [len(e["actions"]) for e in rollouts] * 2
    assert dataset.num_steps == sum(lengths) and dataset.lengths.tolist() == lengths


def test_stats_match_numpy(tmp_path, rollouts):
    trajectories = dt_trajectories(rollouts)
    for trajectory in trajectories:
        trajectory["observations"] = trajectory["observations"].copy()  # the rollouts fixture stays as it is
        trajectory["observations"][:, 0] = 3.0  # a constant dimension: its std is exactly the 1e-6 floor
    dataset = load_dataset(str(write_pickle(tmp_path / "hopper.pkl", trajectories)))
    dataset.env_id = "Hopper-v5"
    returns = [np.float32(e["rewards"]).sum(dtype=np.float64) for e in rollouts]
    observations = np.concatenate([t["observations"] for t in trajectories]).astype(np.float32)
    np.testing.assert_allclose(dataset.returns, returns)
    np.testing.assert_allclose(dataset.observation_mean, observations.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dataset.observation_std, observations.std(axis=0) + 1e-6, rtol=1e-5, atol=1e-6)
    assert dataset.observation_std[0] == np.float32(1e-6) and dataset.observation_mean[0] == 3.0
    assert dataset.observation_mean.dtype == dataset.observation_std.dtype == np.float32
    stats = dataset.stats()
    assert stats["episodes"] == 3 and stats["steps"] == len(observations)
    assert stats["return_mean"] == pytest.approx(np.mean(returns)) and stats["return_max"] == pytest.approx(
        max(returns)
    )
    assert stats["normalized_score_mean"] == pytest.approx(np.mean([normalized_score("Hopper-v5", r) for r in returns]))


def test_sources_of_different_sizes_or_envs_do_not_combine(tmp_path, rollouts, monkeypatch):
    hopper = write_minari(tmp_path, MINARI_ID, rollouts)
    other_env = tmp_path / "test/hopper/relabelled-v0"
    shutil.copytree(hopper, other_env)
    metadata = other_env / "data" / "metadata.json"
    metadata.write_text(metadata.read_text().replace("Hopper-v5", "Walker2d-v5"))
    with pytest.raises(SeqrlError, match="different envs.*Walker2d-v5"):
        load_dataset(f"{hopper},{other_env}")
    wider = [dict(e, observations=np.pad(e["observations"], ((0, 0), (0, 2)))) for e in rollouts]
    pkl = write_pickle(tmp_path / "wider.pkl", dt_trajectories(wider))
    with pytest.raises(SeqrlError, match="obs 11.*obs 13"):
        load_dataset(f"{hopper},{pkl}")


def truncated_copy(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def bad_sources(tmp_path: Path, rollouts: list[dict]) -> dict[str, tuple[str, str]]:
    """name -> (source, pattern its error must match)."""
    n = sum(len(e["actions"]) for e in rollouts)
    nan_observations = np.concatenate([e["observations"][:-1] for e in rollouts])
    nan_observations[5, 2] = np.nan
    nested = dt_trajectories(rollouts)
    nested[1] = {**nested[1], "observations": {"position": nested[1]["observations"]}}
    no_rewards = dt_trajectories(rollouts)
    del no_rewards[2]["rewards"]
    nan_actions = dt_trajectories([dict(rollouts[0], actions=rollouts[0]["actions"] * np.nan)])
    empty = [
        {
            "observations": np.zeros((0, 11)),
            "actions": np.zeros((0, 3)),
            "rewards": np.zeros(0),
            "terminals": np.zeros(0),
        }
    ]
    minari_root = tmp_path / "minari"
    cut_minari = write_minari(minari_root, MINARI_ID, rollouts)
    truncated_copy(cut_minari / "data" / "main_data.hdf5")
    no_metadata = write_minari(minari_root, "test/hopper/nometa-v0", rollouts)
    (no_metadata / "data" / "metadata.json").unlink()
    split = [
        dict(e, observations={"position": e["observations"][:, :5], "velocity": e["observations"][:, 5:]})
        for e in rollouts
    ]
    split_space = gym.spaces.Dict(
        {"position": gym.spaces.Box(-np.inf, np.inf, (5,)), "velocity": gym.spaces.Box(-np.inf, np.inf, (6,))}
    )
    dict_observations = write_minari(minari_root, "test/hopper/dict-v0", split, observation_space=split_space)
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all" * 10)
    (tmp_path / "table.csv").write_text("a,b\n")

    def d4rl(name: str, **replace) -> str:
        return str(write_d4rl(tmp_path / name, rollouts, **replace))

    def dt(name: str, content) -> str:
        return str(write_pickle(tmp_path / name, content))

    return {
        "truncated hdf5": (str(truncated_copy(Path(d4rl("cut.hdf5")))), "cut.hdf5.*not a readable HDF5"),
        "garbage hdf5": (str(tmp_path / "garbage.h5"), "garbage.h5.*not a readable HDF5"),
        "missing key": (d4rl("nokey.hdf5", timeouts=None), "nokey.hdf5.*timeouts"),
        "length mismatch": (d4rl("short.hdf5", rewards=np.zeros(n - 1)), "short.hdf5.*differ in length.*rewards"),
        "NaN": (d4rl("nan.hdf5", observations=nan_observations), "nan.hdf5.*observations.*NaN.*row 5"),
        "inf": (d4rl("inf.hdf5", rewards=np.full(n, np.inf)), "inf.hdf5.*rewards.*inf"),
        "truncated pickle": (
            str(truncated_copy(Path(dt("cut.pkl", dt_trajectories(rollouts))))),
            "cut.pkl.*not a readable pickle",
        ),
        "pickle not a list": (dt("dict.pkl", {"observations": 1}), "dict.pkl.*list of per-episode dicts"),
        "pickle missing key": (dt("norew.pkl", no_rewards), "norew.pkl episode 2.*rewards"),
        "nested observations": (dt("nested.pkl", nested), "nested.pkl episode 1.*observations"),
        "NaN in pickle": (dt("nanep.pkl", nan_actions), "nanep.pkl episode 0.*actions.*NaN"),
        "empty episode": (dt("empty.pkl", empty), "empty.pkl episode 0.*empty"),
        "truncated minari": (str(cut_minari), "tiny-v0.*unreadable Minari dataset"),
        "minari without metadata": (str(no_metadata), "nometa-v0.*not a Minari dataset"),
        "minari dict observations": (str(dict_observations), "dict-v0 has a Dict.*observation space"),
        "unknown suffix": (str(tmp_path / "table.csv"), "table.csv.*unknown file type"),
        "unknown id": ("test/hopper/tinny-v0", "did you mean test/hopper/tiny-v0"),
        "empty spec": (" , ", "no dataset given"),
    }


def test_every_bad_input_is_a_one_line_seqrl_error(tmp_path, rollouts, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    for name, (source, pattern) in bad_sources(tmp_path, rollouts).items():
        with pytest.raises(SeqrlError) as error:
            load_dataset(source)
        message = str(error.value)
        assert re.search(pattern, message), f"{name}: {message}"
        assert "\n" not in message, f"{name}: {message}"


def test_pickles_that_would_run_code_are_refused(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with pytest.raises(SeqrlError, match="refusing to load"):
        load_dataset(str(write_pickle(tmp_path / "evil.pkl", [Exploit()])))
    assert not marker.exists()


def shared_readme_rows(root: Path) -> list[tuple]:
    """The dataset rows of the shared datasets' README table."""
    row = r"^\| `([^`]+)` \| (\S+) \| [^|]+ \| ([\d,]+) \| ([\d,]+) \| (-?\d+) ± (\d+) \((-?\d+)\.\.(-?\d+)\) \|$"
    return re.findall(row, (root / "README.md").read_text(), flags=re.MULTILINE)


def test_shared_datasets_match_their_readme(monkeypatch, shared_datasets):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(shared_datasets))
    rows = shared_readme_rows(shared_datasets)
    assert rows
    for dataset_id, env_id, episodes, steps, mean, std, low, high in rows:
        dataset = load_dataset(dataset_id)
        assert dataset.env_id == env_id
        assert len(dataset.episodes) == int(episodes.replace(",", ""))
        assert dataset.num_steps == int(steps.replace(",", ""))
        returns = dataset.returns
        for value, expected in (
            (returns.mean(), mean),
            (returns.std(), std),
            (returns.min(), low),
            (returns.max(), high),
        ):
            assert abs(value - float(expected)) <= 0.5, dataset_id
        assert np.isfinite(dataset.observation_std).all() and (dataset.observation_std > 0).all()


def test_shared_medium_expert_combines(monkeypatch, shared_datasets):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(shared_datasets))
    rows = shared_readme_rows(shared_datasets)
    counts = {dataset_id: (int(e.replace(",", "")), int(s.replace(",", ""))) for dataset_id, _, e, s, *_ in rows}
    dataset = load_dataset("zoo/hopper/medium-v0,zoo/hopper/expert-v0")
    medium, expert = counts["zoo/hopper/medium-v0"], counts["zoo/hopper/expert-v0"]
    assert len(dataset.episodes) == medium[0] + expert[0]
    assert dataset.num_steps == medium[1] + expert[1]
    assert dataset.env_id == "Hopper-v5"


def test_seqrl_datasets_lists_the_shared_root(seqrl, shared_datasets):
    result = seqrl("datasets", "--root", str(shared_datasets))
    assert result.returncode == 0, result.stderr
    for dataset_id, env_id, episodes, steps, mean, std, low, high in shared_readme_rows(shared_datasets):
        line = next(line for line in result.stdout.splitlines() if dataset_id in line)
        assert line.split()[1:6] == [episodes, steps, mean, "±", std], line
        assert f"{low}..{high}" in line
        assert env_id in result.stdout


def test_seqrl_datasets_uses_minari_datasets_path(tmp_path, rollouts, seqrl):
    write_minari(tmp_path, MINARI_ID, rollouts)
    result = seqrl("datasets", env={"MINARI_DATASETS_PATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if MINARI_ID in line)
    steps = sum(len(e["actions"]) for e in rollouts)
    assert line.split()[1:3] == ["3", str(steps)]
    assert "Hopper-v5" in result.stdout


def test_seqrl_datasets_reports_bad_roots_and_datasets(tmp_path, rollouts, seqrl):
    missing = seqrl("datasets", "--root", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and missing.stderr.startswith("error:") and "Traceback" not in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = seqrl("datasets", "--root", str(tmp_path / "empty"))
    assert empty.returncode == 0 and "no Minari datasets" in empty.stdout
    write_minari(tmp_path / "mixed", MINARI_ID, rollouts)
    broken = write_minari(tmp_path / "mixed", "test/hopper/broken-v0", rollouts)
    truncated_copy(broken / "data" / "main_data.hdf5")
    mixed = seqrl("datasets", "--root", str(tmp_path / "mixed"))
    assert mixed.returncode == 1 and MINARI_ID in mixed.stdout
    assert "broken-v0" in mixed.stderr and len(mixed.stderr.strip().splitlines()) == 1
