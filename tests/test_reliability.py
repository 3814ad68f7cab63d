"""Hostile inputs and faults: each is one `error:` line, nothing written is lost, and resources stay bounded."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from seqrl import DecisionTransformerModel, SeqrlError
from seqrl.agents.episode_log import EpisodeLog
from seqrl.agents.loop import evaluate
from seqrl.agents.random import RandomAgent
from seqrl.envs.make import make_env
from seqrl.planners import checkpoint as checkpoint_module
from seqrl.planners import load_agent
from seqrl.planners.checkpoint import atomic_directory
from seqrl.planners.metadata import CheckpointMeta, read_json, write_json
from test_dt_policy import write_checkpoint
from test_tt_planner import tiny_checkpoint

BUNDLED = Path(__file__).parents[1] / "agents" / "checkpoints"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_error_line(result: subprocess.CompletedProcess, *words: str) -> str:
    """Assert a failed run printed exactly one `error:` line, no traceback, naming `words`; return the line."""
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert len(errors) == 1, output
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def snapshot(directory: Path) -> dict[str, str]:
    """SHA-256 of every regular file under `directory` (links not followed), to see that nothing changed."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def copy_bundled(name: str, target: Path) -> Path:
    return Path(shutil.copytree(BUNDLED / name, target / name))


def edit_json(path: Path, **changes) -> None:
    write_json(path, {**read_json(path), **changes})


# cause 1: non-finite values never reach the env; logs are strict JSON


class SpoiledEnv(gym.Wrapper):
    """Hopper whose observation (or reward) at step `at` holds `value`."""

    def __init__(self, value: float, at: int, target: str = "observation"):
        super().__init__(make_env("Hopper-v5"))
        self.value, self.at, self.target, self.steps = value, at, target, 0

    def reset(self, **kwargs):
        self.steps = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        if self.steps == self.at:
            if self.target == "observation":
                observation = observation.copy()
                observation[2] = self.value
            else:
                reward = self.value
        self.steps += 1
        return observation, reward, terminated, truncated, info


@pytest.mark.parametrize(
    "value, target", [(np.nan, "observation"), (np.inf, "observation"), (np.nan, "reward"), (-np.inf, "reward")]
)
def test_non_finite_env_values_name_episode_slot_and_step(value, target):
    env = SpoiledEnv(value, at=3, target=target)
    with pytest.raises(SeqrlError, match=rf"the {target} of episode 0 \(slot 0, step 3\) is not finite"):
        evaluate(RandomAgent(env.action_space), env, episodes=2, max_steps=10)


def test_agents_refuse_non_finite_and_misshapen_observations(tmp_path):
    env = make_env("Hopper-v5")
    write_checkpoint(tmp_path / "dt", env_id="Hopper-v5")
    policy = load_agent(tmp_path / "dt", env, target_return=3600.0)
    policy.reset(seed=0)
    with pytest.raises(SeqrlError, match="non-finite observation"):
        policy.act(np.full(11, np.nan))
    with pytest.raises(SeqrlError, match=r"shape \(1, 12\)"):
        policy.act(np.zeros(12))
    planner = load_agent(tiny_checkpoint(tmp_path / "tt"), env, beam_width=2, n_expand=1, horizon=1)
    planner.reset(seed=0)
    with pytest.raises(SeqrlError, match="non-finite observation"):
        planner.act(np.full(11, np.inf))


def test_a_nan_weight_is_refused_at_load(tmp_path):
    model = write_checkpoint(tmp_path, env_id="Hopper-v5")
    with torch.no_grad():
        model.embed_return.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path)
    with pytest.raises(SeqrlError, match="embed_return.weight .* NaN or infinite"):
        DecisionTransformerModel.from_pretrained(tmp_path)


def test_a_diverging_policy_is_stopped_before_the_env_steps(tmp_path):
    write_checkpoint(tmp_path, env_id="Hopper-v5")
    policy = load_agent(tmp_path, make_env("Hopper-v5"), target_return=1e38, return_scale=1e-38)
    with pytest.raises(SeqrlError, match=r"non-finite action"):
        evaluate(policy, "Hopper-v5", episodes=1, max_steps=3)


# cause 2 and 3: configs checked against the weights' header, files read only when regular and bounded


def test_absurd_config_is_refused_fast_by_info_and_rollout(seqrl, tmp_path):
    directory = copy_bundled("hopper-dt", tmp_path)
    edit_json(directory / "config.json", n_layer=100000)
    one_error_line(seqrl("info", directory, timeout=60), "n_layer got 100000")
    edit_json(directory / "config.json", n_layer=4)  # in range, but the weights have 3 layers
    one_error_line(
        seqrl("rollout", "--env", "Hopper-v5", "--checkpoint", directory, "--episodes", "1", timeout=60),
        "do not fit",
        "missing",
    )


@pytest.mark.parametrize("name", ["config.json", "seqrl.json", "model.safetensors"])
@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom", "loop"])
def test_device_files_and_link_loops_are_refused(seqrl, tmp_path, name, target):
    directory = copy_bundled("hopper-dt", tmp_path)
    (directory / name).unlink()
    if target == "loop":
        (directory / name).symlink_to(directory / name)
    else:
        (directory / name).symlink_to(target)
    expected = "symbolic link loop" if target == "loop" else "not a regular file"
    one_error_line(seqrl("info", directory, timeout=60), name, expected)


# cause 6: an interrupted save leaves the old or the new checkpoint


class Fault(Exception):
    pass


def save_steps(monkeypatch, fail_at: int | None) -> list[str]:
    """Make the `fail_at`-th rename or removal inside `atomic_directory` raise (no atomic exchange)."""
    calls: list[str] = []
    real_rename, real_rmtree = Path.rename, shutil.rmtree

    def step(name, real):
        def run(*args, **kwargs):
            calls.append(name)
            if len(calls) == fail_at:
                raise Fault(name)
            return real(*args, **kwargs)

        return run

    monkeypatch.setattr(checkpoint_module, "_exchange", lambda first, second: False)
    monkeypatch.setattr(Path, "rename", step("rename", real_rename))
    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", step("rmtree", real_rmtree))
    return calls


def save_dt(final: Path, seed: int) -> torch.Tensor:
    """Save a tiny DT checkpoint atomically into `final`; return one of its weights."""
    with atomic_directory(final) as staging:
        model = write_checkpoint(staging, env_id="Hopper-v5", seed=seed)
        CheckpointMeta(kind="dt").write(staging)
    return model.embed_return.weight.detach().clone()


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 5])
def test_a_fault_at_any_step_of_a_save_keeps_a_checkpoint(tmp_path, monkeypatch, fail_at):
    final = tmp_path / "run"
    old = save_dt(final, seed=0)
    new = save_dt(tmp_path / "reference", seed=1)  # what the interrupted save writes
    calls = save_steps(monkeypatch, fail_at)
    with pytest.raises(Fault):
        save_dt(final, seed=1)
    monkeypatch.undo()
    assert len(calls) == fail_at
    loaded = DecisionTransformerModel.from_pretrained(final).embed_return.weight  # recovers a cut save first
    assert torch.equal(loaded, old) or torch.equal(loaded, new)
    assert CheckpointMeta.read(final).kind == "dt"
    save_dt(final, seed=2)  # and the next save cleans up what the fault left
    assert sorted(path.name for path in tmp_path.iterdir()) == ["reference", "run"]


def test_the_atomic_exchange_replaces_the_checkpoint(tmp_path):
    final = tmp_path / "run"
    save_dt(final, seed=0)
    new = save_dt(final, seed=1)
    assert torch.equal(DecisionTransformerModel.from_pretrained(final).embed_return.weight, new)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
    assert (final / "model.safetensors").stat().st_mode & 0o777 == (final / "config.json").stat().st_mode & 0o777


def test_a_bit_flip_is_caught_by_the_stored_digest(tmp_path):
    final = tmp_path / "run"
    save_dt(final, seed=0)
    weights = final / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x10
    weights.write_bytes(bytes(data))
    with pytest.raises(SeqrlError, match="does not match the SHA-256"):
        DecisionTransformerModel.from_pretrained(final)
    edit_json(final / "seqrl.json", weights_sha256=None)  # a plain checkpoint without a digest still loads
    DecisionTransformerModel.from_pretrained(final)


# disk full and read-only file systems for --log


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs mounted under tmp_path (needs root); skips where it cannot be mounted."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mount], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", mount], check=True)


def fill(directory: Path, leave_pages: int) -> None:
    """Fill a file system with 4 KiB files, then free `leave_pages` of them."""
    fillers = []
    try:
        while True:
            path = directory / f"filler-{len(fillers)}"
            path.write_bytes(b"x" * 4096)
            fillers.append(path)
    except OSError:
        pass
    for path in fillers[-leave_pages - 1 :]:
        path.unlink()
    if leave_pages == 0:
        (directory / "filler-last").write_bytes(b"x" * 4096)


def test_disk_full_mid_run_keeps_episodes_and_prints_the_summary(seqrl, small_tmpfs):
    log = small_tmpfs / "runs.jsonl"
    fill(small_tmpfs, leave_pages=1)
    result = seqrl(
        "rollout", "--env", "Hopper-v5", "--agent", "random", "--episodes", "30", "--max-steps", "2", "--log", log
    )
    line = one_error_line(result, "cannot write episode", "No space left", "--resume")
    kept = [json.loads(text) for text in log.read_text().splitlines()]
    assert kept and [record["episode"] for record in kept] == list(range(len(kept)))
    assert f"{len(kept)} of 30 episodes" in result.stdout, (line, result.stdout)


def test_log_on_a_read_only_file_system_or_under_a_file(seqrl, small_tmpfs, tmp_path):
    subprocess.run(["mount", "-o", "remount,ro", small_tmpfs], check=True)
    args = ("rollout", "--env", "Hopper-v5", "--agent", "random", "--episodes", "1", "--max-steps", "2", "--log")
    one_error_line(seqrl(*args, small_tmpfs / "runs.jsonl"), "Read-only file system")
    (tmp_path / "notes").write_text("a file")
    one_error_line(seqrl(*args, tmp_path / "notes" / "runs.jsonl"), "notes")
    assert (tmp_path / "notes").read_text() == "a file"


def test_append_on_a_full_disk_leaves_the_log_as_it_was(small_tmpfs):
    log = EpisodeLog(small_tmpfs / "runs.jsonl")
    log.append({"env_id": "Hopper-v5", "episode": 0, "return": 1.0})
    before = (small_tmpfs / "runs.jsonl").read_bytes()
    fill(small_tmpfs, leave_pages=0)
    with pytest.raises(SeqrlError, match="No space left"):
        log.append({"env_id": "Hopper-v5", "episode": 1, "return": 2.0, "pad": "x" * 8192})
    log.close()
    assert (small_tmpfs / "runs.jsonl").read_bytes() == before


# the API's weak spots


def test_api_misuse_is_a_one_line_error():
    env = make_env("Hopper-v5")
    with pytest.raises(SeqrlError, match="episodes -3"):
        evaluate(RandomAgent(env.action_space), env, episodes=-3)
    with pytest.raises(SeqrlError, match="max_steps 0"):
        evaluate(RandomAgent(env.action_space), env, episodes=1, max_steps=0)
    with pytest.raises(SeqrlError, match="before reset"):
        RandomAgent(env.action_space).act(np.zeros(11))
    with pytest.raises(SeqrlError, match="Discrete"):
        RandomAgent(gym.spaces.Discrete(3))
    with pytest.raises(SeqrlError, match="flat Box spaces"):
        load_agent(BUNDLED / "hopper-dt", gym.make("CartPole-v1"))


# the table of weak inputs: one error line each, nothing already written changed


class Payload:
    """An object a weights-only load must refuse to build."""


def pickled_bin(directory: Path) -> None:
    (directory / "model.safetensors").unlink()
    torch.save({"weights": torch.zeros(2), "payload": Payload()}, directory / "pytorch_model.bin")


def truncated_weights(directory: Path) -> None:
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])


CONFIG_CASES = {  # (checkpoint, config changes, words of the error)
    "n_head 0": ("hopper-dt", {"n_head": 0}, ["n_head got 0"]),
    "n_layer '3'": ("hopper-dt", {"n_layer": "3"}, ["n_layer got '3'"]),
    "n_layer 4.5": ("hopper-dt", {"n_layer": 4.5}, ["n_layer got 4.5"]),
    "n_layer null": ("hopper-dt", {"n_layer": None}, ["n_layer got None"]),
    "hidden_size -128": ("hopper-dt", {"hidden_size": -128}, ["hidden_size got -128"]),
    "block_size -1": ("hopper-tt", {"block_size": -1}, ["block_size got -1"]),
}
META_CASES = {
    "target_return 'lots'": ("hopper-dt", {"policy": {"target_return": "lots"}}, ["target_return got 'lots'"]),
    "policy [1]": ("hopper-dt", {"policy": [1]}, ["policy got [1]"]),
    "return_scale 0": ("hopper-dt", {"policy": {"return_scale": 0}}, ["return_scale got 0"]),
    "return_scale -1": ("hopper-dt", {"policy": {"return_scale": -1}}, ["return_scale got -1"]),
}
FILE_CASES = {
    "garbage discretizer": (
        "hopper-tt",
        lambda d: (d / "discretizer.npz").write_bytes(b"garbage"),
        ["discretizer.npz"],
    ),
    "pickled pytorch_model.bin": ("hopper-dt", pickled_bin, ["pytorch_model.bin", "runs no code"]),
    "truncated weights": ("hopper-dt", truncated_weights, ["model.safetensors"]),
}
UNSAFE_ADVICE = ("allow_pickle", "weights_only")


@pytest.mark.parametrize("case", [*CONFIG_CASES, *META_CASES, *FILE_CASES])
def test_broken_checkpoints_are_one_line_errors(seqrl, tmp_path, case):
    name, change, words = {**CONFIG_CASES, **META_CASES, **FILE_CASES}[case]
    directory = copy_bundled(name, tmp_path)
    if case in CONFIG_CASES:
        edit_json(directory / "config.json", **change)
    elif case in META_CASES:
        edit_json(directory / "seqrl.json", **change)
    else:
        change(directory)
    before = snapshot(tmp_path)
    for args in (
        ["info", directory],
        [
            "rollout",
            "--env",
            "Hopper-v5",
            "--checkpoint",
            directory,
            "--episodes",
            "1",
            "--max-steps",
            "2",
            "--log",
            "runs.jsonl",
        ],
    ):
        if case in META_CASES and args[0] == "info":
            continue  # info shows the stored policy block as it is
        line = one_error_line(seqrl(*args, timeout=90), *words)
        assert not any(advice in line for advice in UNSAFE_ADVICE), line
    assert snapshot(tmp_path) == before


CLI_CASES = {  # arguments, files to write first, words of the error
    "--target-return nan": (["rollout", "--env", "Hopper-v5", "--target-return", "nan"], {}, ["--target-return"]),
    "--target-return inf": (["rollout", "--env", "Hopper-v5", "--target-return", "inf"], {}, ["--target-return"]),
    "--seed -5": (["rollout", "--env", "Hopper-v5", "--seed", "-5"], {}, ["--seed got -5"]),
    "--lr nan": (["train", "dt", "--dataset", "d", "--out", "out", "--lr", "nan"], {}, ["--lr"]),
    "--lr -1": (["train", "dt", "--dataset", "d", "--out", "out", "--lr", "-1"], {}, ["--lr"]),
    "--dropout 2": (["train", "dt", "--dataset", "d", "--out", "out", "--dropout", "2"], {}, ["--dropout"]),
    "planner flag to random": (
        ["rollout", "--env", "Hopper-v5", "--agent", "random", "--beam-width", "4"],
        {},
        ["--beam-width", "random"],
    ),
    "--log notes.txt": (
        [
            "rollout",
            "--env",
            "Hopper-v5",
            "--agent",
            "random",
            "--episodes",
            "1",
            "--max-steps",
            "2",
            "--log",
            "notes.txt",
        ],
        {"notes.txt": b"my notes"},
        ["notes.txt"],
    ),
    "plot a binary file": (["plot", "blob.jsonl"], {"blob.jsonl": bytes(range(256))}, ["not a text file"]),
    "plot a directory": (["plot", "logs"], {"logs/keep": b""}, ["not a regular file"]),
    "plot -o a directory": (
        ["plot", "runs.jsonl", "-o", "logs"],
        {"logs/keep": b"", "runs.jsonl": b'{"env_id": "x", "episode": 0, "return": 1.0}\n'},
        ["is a directory"],
    ),
    "log line without return": (["plot", "runs.jsonl"], {"runs.jsonl": b'{"env_id": "x", "episode": 0}\n'}, ["line 1"]),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_weak_command_lines_are_one_line_errors(seqrl, tmp_path, case):
    args, files, words = CLI_CASES[case]
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    before = snapshot(tmp_path)
    one_error_line(seqrl(*args, timeout=90), *words)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists()


def test_broken_dataset_files_are_one_line_errors(tmp_path):
    import h5py
    from seqrl.envs.datasets import load_dataset

    (tmp_path / "minari" / "data").mkdir(parents=True)
    (tmp_path / "minari" / "data" / "metadata.json").write_text("")
    with pytest.raises(SeqrlError, match="metadata.json is empty"):
        load_dataset(str(tmp_path / "minari"))
    with h5py.File(tmp_path / "groups.hdf5", "w") as file:
        for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
            file.create_group(key)
    with pytest.raises(SeqrlError, match="are HDF5 groups"):
        load_dataset(str(tmp_path / "groups.hdf5"))
