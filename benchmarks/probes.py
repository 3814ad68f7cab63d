"""Rerun the reliability issue's probes of the `seqrl` command and the Python API, and count them by group.

Each probe sets up files in a fresh directory, runs one command, and is
- held: the expected outcome (one `error:` line, exit non-zero, no traceback, nothing written changed; or exit 0),
- weak: it failed as it should but with a traceback, several lines, or a changed file,
- failed: it exited 0 where it should have refused, or it hung past the timeout.

    python benchmarks/probes.py            # the seqrl on PYTHONPATH
    PYTHONPATH=/tmp/before python benchmarks/probes.py --verbose   # e.g. an older export of seqrl
"""

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BUNDLED = Path(__file__).parents[1] / "agents" / "checkpoints"
MEMORY_LIMIT = 4 << 30  # address space per probe: an older seqrl reading /dev/zero stops at MemoryError
ROLLOUT = ["rollout", "--env", "Hopper-v5", "--episodes", "1", "--max-steps", "5"]
PYTHON_HARNESS = """
import sys
from seqrl import SeqrlError
try:
    exec(sys.argv[1])
except SeqrlError as error:
    print(f"error: {error}")
    sys.exit(1)
"""


@dataclass
class Probe:
    group: str
    name: str
    command: list[str]  # seqrl arguments, or ["python", CODE]
    setup: Callable[[Path], None] = lambda directory: None
    refuse: bool = True  # a one-line error is expected (else a clean exit 0)
    timeout: float = 60
    ok_files: list[str] = field(default_factory=list)  # files the probe may write


def copy(name: str) -> Callable[[Path], None]:
    return lambda directory: shutil.copytree(BUNDLED / name, directory / "ckpt")


def edit(name: str, file: str, **changes) -> Callable[[Path], None]:
    def setup(directory: Path) -> None:
        copy(name)(directory)
        path = directory / "ckpt" / file
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return setup


def link(name: str, file: str, target: str) -> Callable[[Path], None]:
    def setup(directory: Path) -> None:
        copy(name)(directory)
        path = directory / "ckpt" / file
        path.unlink()
        path.symlink_to(path if target == "loop" else target)

    return setup


def write(file: str, data: bytes) -> Callable[[Path], None]:
    def setup(directory: Path) -> None:
        (directory / file).parent.mkdir(parents=True, exist_ok=True)
        (directory / file).write_bytes(data)

    return setup


def damage_weights(change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def setup(directory: Path) -> None:
        copy("hopper-dt")(directory)
        weights = directory / "ckpt" / "model.safetensors"
        weights.write_bytes(change(weights.read_bytes()))

    return setup


def resaved_dt(directory: Path) -> None:
    """A DT checkpoint saved by this seqrl (so seqrl.json holds the weights' digest), then bit-flipped."""
    code = (
        "from pathlib import Path; from seqrl import DecisionTransformerModel as M; "
        "from seqrl.planners.decision.options import DecisionMeta; d = Path('ckpt'); "
        "M.from_pretrained(d).save_pretrained(d); DecisionMeta.read(d).write(d)"
    )
    copy("hopper-dt")(directory)
    subprocess.run([sys.executable, "-c", code], cwd=directory, check=True, capture_output=True)
    weights = directory / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-7] ^= 0x04
    weights.write_bytes(bytes(data))


def python(code: str) -> list[str]:
    return ["python", code]


NAN_ENV = """
import gymnasium as gym, numpy as np
from seqrl.agents.loop import evaluate
from seqrl.agents.random import RandomAgent
class Spoiled(gym.Wrapper):
    def step(self, action):
        o, r, te, tr, i = self.env.step(action)
        return o, VALUE, te, tr, i
env = Spoiled(gym.make("Hopper-v5"))
evaluate(RandomAgent(env.action_space), env, episodes=1, max_steps=5)
"""
NAN_OBS_ENV = NAN_ENV.replace("return o, VALUE", "return o * VALUE, r")
DT = "from seqrl.planners import load_agent; from seqrl.envs.make import make_env; import numpy as np\n"
DT_AGENT = DT + "agent = load_agent('{ckpt}', make_env('Hopper-v5')); agent.reset(seed=0)\n"

PROBES = [
    # cause 1: non-finite values
    Probe("non-finite", "--target-return nan", [*ROLLOUT, "--target-return", "nan", "--log", "l.jsonl"]),
    Probe("non-finite", "--target-return inf", [*ROLLOUT, "--target-return", "inf"]),
    Probe(
        "non-finite",
        "policy.return_scale 0",
        [*ROLLOUT, "--checkpoint", "ckpt"],
        edit("hopper-dt", "seqrl.json", policy={"return_scale": 0}),
    ),
    Probe("non-finite", "NaN reward from an env", python(NAN_ENV.replace("VALUE", "float('nan')"))),
    Probe("non-finite", "inf reward from an env", python(NAN_ENV.replace("VALUE", "float('inf')"))),
    Probe("non-finite", "NaN observation from an env", python(NAN_OBS_ENV.replace("VALUE", "float('nan')"))),
    Probe(
        "non-finite",
        "DT act(NaN)",
        python(DT_AGENT.format(ckpt=BUNDLED / "hopper-dt") + "agent.act(np.full(11, np.nan))"),
    ),
    Probe(
        "non-finite",
        "TT act(inf)",
        python(
            "from seqrl.planners import load_agent; from seqrl.envs.make import make_env; import numpy as np\n"
            f"agent = load_agent('{BUNDLED / 'hopper-tt'}', make_env('Hopper-v5'),"
            " beam_width=2, n_expand=1, horizon=1)\n"
            "agent.reset(seed=0); agent.act(np.full(11, np.inf))"
        ),
    ),
    # cause 2: sizes
    Probe("sizes", "info n_layer 100000", ["info", "ckpt"], edit("hopper-dt", "config.json", n_layer=100000)),
    Probe(
        "sizes",
        "rollout n_layer 100000",
        [*ROLLOUT, "--checkpoint", "ckpt"],
        edit("hopper-dt", "config.json", n_layer=100000),
    ),
    Probe(
        "sizes",
        "config disagrees with weights",
        [*ROLLOUT, "--checkpoint", "ckpt"],
        edit("hopper-dt", "config.json", n_layer=4),
    ),
    # cause 3: file reads
    *[
        Probe("file reads", f"{file} -> {target}", ["info", "ckpt"], link("hopper-dt", file, target))
        for file in ("config.json", "seqrl.json", "model.safetensors")
        for target in ("/dev/zero", "/dev/urandom", "loop")
    ],
    # cause 4: --log never destroys a file
    Probe(
        "log safety",
        "--log notes.txt",
        [*ROLLOUT, "--agent", "random", "--log", "notes.txt"],
        write("notes.txt", b"my notes"),
    ),
    Probe("log safety", "--log on a directory", [*ROLLOUT, "--agent", "random", "--log", "logs"], write("logs/x", b"")),
    # config types and ranges
    *[
        Probe("config values", f"{key} {value!r}", ["info", "ckpt"], edit(name, "config.json", **{key: value}))
        for name, key, value in [
            ("hopper-dt", "n_head", 0),
            ("hopper-dt", "n_layer", "3"),
            ("hopper-dt", "n_layer", 4.5),
            ("hopper-dt", "n_layer", None),
            ("hopper-dt", "hidden_size", -128),
            ("hopper-tt", "block_size", -1),
        ]
    ],
    Probe(
        "config values",
        "policy.target_return 'lots'",
        [*ROLLOUT, "--checkpoint", "ckpt"],
        edit("hopper-dt", "seqrl.json", policy={"target_return": "lots"}),
    ),
    Probe(
        "config values", "policy [1]", [*ROLLOUT, "--checkpoint", "ckpt"], edit("hopper-dt", "seqrl.json", policy=[1])
    ),
    Probe(
        "config values",
        "policy.return_scale -1",
        [*ROLLOUT, "--checkpoint", "ckpt"],
        edit("hopper-dt", "seqrl.json", policy={"return_scale": -1}),
    ),
    Probe("flags", "--seed -5", [*ROLLOUT, "--seed", "-5"]),
    Probe("flags", "--lr nan", ["train", "dt", "--dataset", "d", "--out", "out", "--lr", "nan"]),
    Probe("flags", "--lr -1", ["train", "dt", "--dataset", "d", "--out", "out", "--lr", "-1"]),
    Probe("flags", "--dropout 2", ["train", "dt", "--dataset", "d", "--out", "out", "--dropout", "2"]),
    Probe("flags", "--target-return to random", [*ROLLOUT, "--agent", "random", "--target-return", "10"]),
    Probe("flags", "--beam-width to random", [*ROLLOUT, "--agent", "random", "--beam-width", "4"]),
    Probe("flags", "--target-return to a TT", [*ROLLOUT, "--agent", "tt", "--target-return", "10"]),
    # I/O
    Probe(
        "I/O",
        "--log under a file",
        [*ROLLOUT, "--agent", "random", "--log", "notes/l.jsonl"],
        write("notes", b"a file"),
    ),
    Probe("I/O", "plot a binary file", ["plot", "blob"], write("blob", bytes(range(256)))),
    Probe("I/O", "plot a directory", ["plot", "logs"], write("logs/x", b"")),
    Probe(
        "I/O",
        "plot -o a directory",
        ["plot", "l.jsonl", "-o", "logs"],
        lambda d: (write("logs/x", b"")(d), write("l.jsonl", b'{"env_id": "x", "episode": 0, "return": 1.0}\n')(d)),
    ),
    Probe("I/O", "log line without return", ["plot", "l.jsonl"], write("l.jsonl", b'{"env_id": "x", "episode": 0}\n')),
    # messages
    Probe(
        "messages",
        "garbage discretizer.npz",
        [*ROLLOUT, "--checkpoint", "ckpt"],
        lambda d: (copy("hopper-tt")(d), (d / "ckpt" / "discretizer.npz").write_bytes(b"garbage")),
    ),
    Probe(
        "messages",
        "pickled pytorch_model.bin",
        [*ROLLOUT, "--checkpoint", "ckpt"],
        lambda d: (
            copy("hopper-dt")(d),
            (d / "ckpt" / "model.safetensors").unlink(),
            subprocess.run(
                [sys.executable, "-c", "import torch, collections; torch.save({'w': collections.Counter()}, 'b')"],
                cwd=d / "ckpt",
                check=True,
            ),
            (d / "ckpt" / "b").rename(d / "ckpt" / "pytorch_model.bin"),
        ),
    ),
    Probe("messages", "info on truncated weights", ["info", "ckpt"], damage_weights(lambda data: data[:-1000])),
    Probe("messages", "bit-flipped weights (seqrl-saved)", [*ROLLOUT, "--checkpoint", "ckpt"], resaved_dt),
    Probe(
        "messages",
        "Discrete spaces to load_agent",
        python(
            f"import gymnasium as gym; from seqrl.planners import load_agent; load_agent('{BUNDLED / 'hopper-dt'}', "
            "gym.make('CartPole-v1'))"
        ),
    ),
    # API
    Probe(
        "API",
        "evaluate(episodes=-3)",
        python(
            "from seqrl.agents.loop import evaluate; from seqrl.agents.random import RandomAgent\n"
            "import gymnasium as gym\n"
            "env = gym.make('Hopper-v5'); evaluate(RandomAgent(env.action_space), env, episodes=-3)"
        ),
    ),
    Probe(
        "API",
        "evaluate(max_steps=0)",
        python(
            "from seqrl.agents.loop import evaluate; from seqrl.agents.random import RandomAgent\n"
            "import gymnasium as gym\n"
            "env = gym.make('Hopper-v5'); evaluate(RandomAgent(env.action_space), env, episodes=1, max_steps=0)"
        ),
    ),
    Probe(
        "API",
        "RandomAgent.act before reset",
        python(
            "from seqrl.agents.random import RandomAgent; import gymnasium as gym, numpy as np\n"
            "RandomAgent(gym.make('Hopper-v5').action_space).act(np.zeros(11))"
        ),
    ),
    Probe(
        "API",
        "DT wrong observation shape",
        python(DT_AGENT.format(ckpt=BUNDLED / "hopper-dt") + "agent.act(np.zeros(12))"),
    ),
    # things that must keep working
    Probe(
        "still works",
        "random rollout with a log",
        [*ROLLOUT, "--agent", "random", "--log", "l.jsonl"],
        refuse=False,
        ok_files=["l.jsonl"],
    ),
    Probe("still works", "info on the bundled DT", ["info", str(BUNDLED / "hopper-dt")], refuse=False),
]


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run(probe: Probe) -> tuple[str, str]:
    """(held | weak | failed, the last output line)."""
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        probe.setup(directory)
        before = snapshot(directory)
        if probe.command[0] == "python":
            command = [sys.executable, "-c", PYTHON_HARNESS, probe.command[1]]
        else:
            command = [str(Path(sys.executable).parent / "seqrl"), *probe.command]
        environment = {**os.environ, "COLUMNS": "200"}
        try:
            result = subprocess.run(
                command,
                cwd=directory,
                env=environment,
                capture_output=True,
                text=True,
                timeout=probe.timeout,
                preexec_fn=limit_memory,
            )
        except subprocess.TimeoutExpired:
            return "failed", f"no answer within {probe.timeout:.0f} s"
        output = result.stdout + result.stderr
        after = {key: value for key, value in snapshot(directory).items() if key not in probe.ok_files}
        unchanged = all(after.get(key) == value for key, value in before.items() if key not in probe.ok_files)
        last = (output.strip().splitlines() or [""])[-1][:150]
        if not probe.refuse:
            return ("held" if result.returncode == 0 else "failed"), last
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        if result.returncode == 0 or not unchanged:
            return "failed", last
        if len(errors) != 1 or "Traceback" in output:
            return "weak", last
        return "held", errors[0][:150]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="print each probe's outcome and last line")
    parser.add_argument("--group", help="run only this group")
    args = parser.parse_args()
    counts: dict[str, Counter] = defaultdict(Counter)
    for probe in PROBES:
        if args.group and probe.group != args.group:
            continue
        outcome, line = run(probe)
        counts[probe.group][outcome] += 1
        if args.verbose:
            print(f"{outcome:6}  {probe.group:13} {probe.name:34} {line}", flush=True)
    print(f"{'group':14} {'probes':>6} {'held':>5} {'weak':>5} {'failed':>6}")
    for group, count in counts.items():
        print(f"{group:14} {sum(count.values()):6} {count['held']:5} {count['weak']:5} {count['failed']:6}")
    total = sum(counts.values(), Counter())
    print(f"{'all':14} {sum(total.values()):6} {total['held']:5} {total['weak']:5} {total['failed']:6}")


if __name__ == "__main__":
    main()
