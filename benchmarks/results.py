"""Train and evaluate seqrl's agents on the shared offline datasets; print README's results table.

    python benchmarks/results.py                          # every run: train (or resume), then evaluate
    python benchmarks/results.py --only dt-hopper-medium  # one run
    python benchmarks/results.py --bundle                 # also copy the bundled runs into the package
    python benchmarks/results.py --bundled                # evaluate the package's bundled agents as they are

Each run trains with `seqrl train`, resuming an unfinished checkpoint, then evaluates with
`seqrl evaluate --log ... --resume` on fixed seeds, so an interrupted call picks up where it stopped
(logs written by `seqrl rollout` before count as well).
The table's numbers come from those logs and the checkpoints' seqrl.json, nothing else.
"""

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUNDLE_FILES = ("config.json", "model.safetensors", "discretizer.npz", "seqrl.json")


@dataclass
class Run:
    """One trained agent: how it is trained and how it is evaluated."""

    method: str  # "dt" or "tt"
    dataset: str
    env_id: str
    steps: int  # training updates
    train: list[str]  # further `seqrl train` options
    planner: dict[str, Any] = field(default_factory=dict)  # TT planner settings: evaluated, and bundled as defaults
    bundled: bool = False  # the env's shipped agent of this method (`--bundle` copies it into the package)
    chosen: str = "last save"  # which of the run's checkpoints is evaluated, and how it was picked

    def evaluate_options(self) -> list[str]:
        """`seqrl evaluate` options: ten envs at a time, and the planner settings."""
        options = ["--num-envs", "10"]
        for name, value in self.planner.items():
            options += ["--set", f"{name}={value}"]
        return options


DT_TRAIN = ["--warmup-steps", "1000", "--eval-every", "500", "--save-every", "500", "--seed", "0"]
TT_TRAIN = [
    "--batch-size",
    "64",
    "--warmup-epochs",
    "0.1",
    "--precision",
    "bf16",
    "--eval-every",
    "250",
    "--save-every",
    "250",
    "--seed",
    "0",
]  # plus --decay-epochs: the cosine ends with the run
# the planner settings evaluated (the original plans with beam 128, horizon 15): on Hopper, beams 8, 16 and 32
# scored alike (README), so the cheapest is evaluated and bundled; on HalfCheetah search (beam 8, horizon 5)
# scored 3.9 where sampling the model's actions alone (cdf_act 0.6, no search) scored 38.0 (README)
TT_PLAN_HOPPER = {"beam_width": 8, "horizon": 5}
TT_PLAN_HALFCHEETAH = {"beam_width": 1, "n_expand": 1, "horizon": 1}

RUNS = {
    "dt-hopper-medium": Run("dt", "zoo/hopper/medium-v0", "Hopper-v5", 12000, DT_TRAIN),
    "dt-hopper-medium-cosine": Run(
        "dt", "zoo/hopper/medium-v0", "Hopper-v5", 12000, [*DT_TRAIN, "--decay-steps", "12000"]
    ),
    "dt-hopper-medium-cosine-20k": Run(
        "dt", "zoo/hopper/medium-v0", "Hopper-v5", 20000, [*DT_TRAIN, "--decay-steps", "20000"]
    ),
    "dt-hopper-medium-expert": Run("dt", "zoo/hopper/medium-v0,zoo/hopper/expert-v0", "Hopper-v5", 8000, DT_TRAIN),
    "dt-hopper-medium-expert-cosine": Run(
        "dt", "zoo/hopper/medium-v0,zoo/hopper/expert-v0", "Hopper-v5", 10000, [*DT_TRAIN, "--decay-steps", "10000"]
    ),
    "dt-hopper-expert": Run(
        "dt",
        "zoo/hopper/expert-v0",
        "Hopper-v5",
        8000,
        DT_TRAIN,
        bundled=True,
        chosen="last save; bundled as the Hopper default by seeds 100-149 (held_out.py)",
    ),
    "dt-halfcheetah-medium": Run("dt", "zoo/halfcheetah/medium-v0", "HalfCheetah-v5", 4000, DT_TRAIN, bundled=True),
    "dt-halfcheetah-medium-expert": Run(
        "dt", "zoo/halfcheetah/medium-v0,zoo/halfcheetah/expert-v0", "HalfCheetah-v5", 4000, DT_TRAIN
    ),
    "dt-halfcheetah-expert": Run("dt", "zoo/halfcheetah/expert-v0", "HalfCheetah-v5", 8000, DT_TRAIN),
    "tt-hopper-medium": Run(
        "tt",
        "zoo/hopper/medium-v0",
        "Hopper-v5",
        3545,
        [*TT_TRAIN, "--decay-epochs", "2.4"],
        TT_PLAN_HOPPER,
        bundled=True,
    ),
    "tt-halfcheetah-medium": Run(
        "tt",
        "zoo/halfcheetah/medium-v0",
        "HalfCheetah-v5",
        15000,
        [*TT_TRAIN, "--decay-epochs", "10.0", "--nproc", "2", "--keep-checkpoints"],
        TT_PLAN_HALFCHEETAH,
        chosen="last save (15,000), the best of the saves at 10,750, 13,000, 14,250 and 15,000 on seeds 10000-10009",
    ),
}


def seqrl(*args: str) -> None:
    """Run the installed `seqrl` command, echoing it; stop with its exit status on failure (it printed the error)."""
    print("$ seqrl " + " ".join(args), flush=True)
    status = subprocess.run(["seqrl", *args]).returncode
    if status:
        sys.exit(status)


def read_log(log: Path) -> list[dict]:
    """The episode records of a `seqrl rollout --log` or `seqrl evaluate --log` file."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def score_cells(records: list[dict]) -> str:
    """Table cells 'mean ± std | IQM [95% interval] | worst mean over 5 consecutive seeds' of records in seed order."""
    from seqrl.agents.stats import summarize_scores

    summary = summarize_scores([r["normalized_score"] for r in records], [r["length"] for r in records])
    interval = "" if summary.iqm_low is None else f" [{summary.iqm_low:.1f}, {summary.iqm_high:.1f}]"
    worst = "-" if summary.worst_window_mean is None else f"{summary.worst_window_mean:.1f}"
    return f"{summary.mean:.1f} ± {summary.std:.1f} | {summary.iqm:.1f}{interval} | {worst}"


def read_meta(checkpoint: Path) -> dict:
    """The checkpoint's seqrl.json, or {} before training wrote one."""
    path = checkpoint / "seqrl.json"
    return json.loads(path.read_text()) if path.exists() else {}


def train(run: Run, checkpoint: Path, threads: int) -> None:
    """Train the run's checkpoint, resuming it if an earlier call stopped short."""
    if read_meta(checkpoint).get("steps", 0) >= run.steps:
        return
    resume = ["--resume"] if (checkpoint / "training_state.pt").exists() else []
    seqrl(
        "train",
        run.method,
        "--dataset",
        run.dataset,
        "--out",
        str(checkpoint),
        "--steps",
        str(run.steps),
        "--threads",
        str(threads),
        "--quiet",
        *run.train,
        *resume,
    )


def evaluate(run: Run, checkpoint: Path, log: Path, episodes: int, threads: int) -> list[dict]:
    """Evaluate on seeds 0..episodes-1 (resuming the log) and return its episode records."""
    seqrl(
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--env",
        run.env_id,
        "--episodes",
        str(episodes),
        "--seed",
        "0",
        "--threads",
        str(threads),
        "--log",
        str(log),
        "--resume",
        "--quiet",
        *run.evaluate_options(),
    )
    return sorted((r for r in read_log(log) if r["episode"] < episodes), key=lambda r: r["episode"])


@functools.cache  # several runs share a dataset
def behaviour_score(dataset: str) -> float:
    """Mean normalized score of the dataset's episodes (its behaviour policy)."""
    from seqrl.envs.datasets import load_dataset

    return load_dataset(dataset).stats()["normalized_score_mean"]


def training_cell(meta: dict) -> str:
    """The training budget a checkpoint's seqrl.json records: updates, tokens, processes, wall time."""
    processes = meta["training"].get("nproc", 1)  # runs before --nproc trained in one process
    hours = meta["train_time_s"] / 3600  # the trainer's wall time over all resumed sessions
    return f"{meta['steps']} updates, {meta['tokens'] / 1e6:.1f}M tokens, {processes} proc, {hours:.2f} h"


def table_row(name: str, run: Run, checkpoint: Path, records: list[dict]) -> str:
    """One markdown row: method, dataset, scores, behaviour score, episodes, budget, losses, planner, choice."""
    meta = read_meta(checkpoint)
    losses = f"{meta['final_loss']:.4f} / {meta['held_out_loss']:.4f}"
    planner = ", ".join(f"{setting} {value}" for setting, value in run.planner.items()) or "-"
    return (
        f"| {run.method.upper()} | `{run.dataset}` | {score_cells(records)} | {behaviour_score(run.dataset):.1f} "
        f"| {len(records)} | {training_cell(meta)} | {meta['device']} | {losses} | {planner} | {run.chosen} "
        f"| `{name}` |"
    )


def bundled_directory(run: Run) -> Path:
    """Where the package keeps the run's checkpoint when it is the env's bundled agent of its method."""
    from seqrl.envs.families import env_family

    return REPO / "agents" / "checkpoints" / f"{env_family(run.env_id)}-{run.method}"


def bundle(run: Run, checkpoint: Path) -> None:
    """Copy the checkpoint's inference files into the package as the env's bundled agent, with its planner settings."""
    from seqrl.planners.metadata import write_json

    target = bundled_directory(run)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in BUNDLE_FILES:
        if (checkpoint / name).exists():
            shutil.copy2(checkpoint / name, target / name)
    if run.planner:  # the bundled planner plans as it was evaluated
        write_json(target / "seqrl.json", {**read_meta(target), "planner": run.planner})
    print(f"bundled {checkpoint} as {target.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="runs to do (default: all)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs", help="where checkpoints and logs go")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per run (seeds 0..N-1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and evaluation")
    parser.add_argument(
        "--datasets", type=Path, default=REPO.parent / "shared" / "datasets", help="Minari datasets root"
    )
    parser.add_argument("--no-train", action="store_true", help="evaluate existing checkpoints only")
    parser.add_argument(
        "--bundle", action="store_true", help="copy the bundled runs' checkpoints into agents/checkpoints/"
    )
    parser.add_argument(
        "--bundled",
        action="store_true",
        help="evaluate the bundled runs' checkpoints in agents/checkpoints/ (no training; the others are skipped)",
    )
    args = parser.parse_args()
    if args.bundle and args.bundled:
        parser.error("--bundle copies trained runs into the package, --bundled evaluates what is there: pass one")
    os.environ["MINARI_DATASETS_PATH"] = str(args.datasets)

    rows = []
    for name in args.only or RUNS:
        run, checkpoint, log = RUNS[name], args.runs_dir / name, args.runs_dir / f"{name}.eval.jsonl"
        if args.bundled:
            if not run.bundled:
                continue
            checkpoint, log = bundled_directory(run), args.runs_dir / f"{name}.bundled.eval.jsonl"
        elif not args.no_train:
            train(run, checkpoint, args.threads)
        if not checkpoint.is_dir():
            print(f"skipping {name}: no checkpoint at {checkpoint}", file=sys.stderr)
            continue
        records = evaluate(run, checkpoint, log, args.episodes, args.threads)
        rows.append(table_row(name, run, checkpoint, records))
        if args.bundle and run.bundled:
            bundle(run, checkpoint)

    print(
        "\n| method | dataset | normalized score (mean ± std) | IQM [95% interval] | worst 5-seed mean "
        "| behaviour policy | episodes | training | device | final loss (train / held-out) | planner "
        "| chosen checkpoint | run |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"\nevaluation: seeds 0..{args.episodes - 1}, full episodes (1000-step limit)")


if __name__ == "__main__":
    main()
