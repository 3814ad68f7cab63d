"""Score checkpoints on held-out seeds, to choose a bundled agent without looking at the results table's seeds.

    python benchmarks/held_out.py runs/dt-hopper-medium runs/dt-hopper-medium-cosine --env Hopper-v5
    python benchmarks/held_out.py runs/dt-hopper-medium --env Hopper-v5 --target-returns 3000 3600 4200

Each checkpoint (and DT target return) is rolled out with the installed `seqrl rollout` on seeds
100..100+N-1, which `benchmarks/results.py` never uses (it evaluates seeds 0..9). Logs go to
--logs and are resumed, so a second call only prints.
"""

import argparse
from pathlib import Path

from results import REPO, read_log, score_cells, seqrl


def scores(checkpoint: Path, env_id: str, target: float | None, args: argparse.Namespace) -> list[float]:
    """Normalized scores of the held-out episodes, in seed order."""
    label = checkpoint.name + (f"-target{target:g}" if target is not None else "")
    log = args.logs / f"{label}.jsonl"
    options = ["--target-return", str(target)] if target is not None else []
    seqrl("rollout", "--checkpoint", str(checkpoint), "--env", env_id, "--episodes", str(args.episodes), "--seed", str(args.seed),
          "--num-envs", "10", "--threads", str(args.threads), "--log", str(log), "--resume", "--quiet", *options)
    records = sorted(read_log(log), key=lambda r: r["seed"])
    return [r["normalized_score"] for r in records if args.seed <= r["seed"] < args.seed + args.episodes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="checkpoint directories")
    parser.add_argument("--env", required=True, help="env id, e.g. Hopper-v5")
    parser.add_argument("--target-returns", type=float, nargs="*", default=[None], help="DT target returns to try (default: the checkpoint's)")
    parser.add_argument("--episodes", type=int, default=50, help="held-out episodes per setting")
    parser.add_argument("--seed", type=int, default=100, help="first held-out seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--logs", type=Path, default=REPO / "runs" / "held-out", help="where the episode logs go")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)

    rows = []
    for checkpoint in args.checkpoints:
        for target in args.target_returns:
            values = scores(checkpoint, args.env, target, args)
            rows.append(f"| `{checkpoint.name}` | {'default' if target is None else f'{target:g}'} | {score_cells(values)} | {len(values)} |")

    print("\n| checkpoint | target return | normalized score (mean ± std) | worst 5-seed mean | episodes |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print(f"\nseeds {args.seed}..{args.seed + args.episodes - 1}, full episodes")


if __name__ == "__main__":
    main()
