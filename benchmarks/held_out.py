"""Score checkpoints on held-out seeds, to choose a bundled agent without looking at the results table's seeds.

    python benchmarks/held_out.py runs/dt-hopper-medium runs/dt-hopper-medium-cosine --env Hopper-v5
    python benchmarks/held_out.py runs/dt-hopper-medium --env Hopper-v5 --target-returns 3000 3600 4200

One `seqrl evaluate` sweep runs every checkpoint (times every DT target return) on seeds
100..100+N-1, which `benchmarks/results.py` never uses (it evaluates seeds 0..9). The sweep's log
goes to --logs and is resumed, so a second call only prints; --workers runs it in parallel.
"""

import argparse
from pathlib import Path

from results import REPO, read_log, score_cells, seqrl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="checkpoint directories")
    parser.add_argument("--env", required=True, help="env id, e.g. Hopper-v5")
    parser.add_argument(
        "--target-returns",
        type=float,
        nargs="*",
        default=[],
        help="DT target returns to try (default: the checkpoint's)",
    )
    parser.add_argument("--episodes", type=int, default=50, help="held-out episodes per setting")
    parser.add_argument("--seed", type=int, default=100, help="first held-out seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--logs", type=Path, default=REPO / "runs" / "held-out", help="where the sweep's log goes")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    log = args.logs / f"{args.env}.jsonl"

    targets = ",".join(f"{target:g}" for target in args.target_returns)
    grid = ["--set", f"target_return={targets}"] if targets else []
    checkpoints = [option for checkpoint in args.checkpoints for option in ("--checkpoint", str(checkpoint))]
    seqrl(
        "evaluate",
        "--env",
        args.env,
        *checkpoints,
        *grid,
        "--episodes",
        str(args.episodes),
        "--seed",
        str(args.seed),
        "--num-envs",
        "10",
        "--threads",
        str(args.threads),
        "--workers",
        str(args.workers),
        "--log",
        str(log),
        "--resume",
        "--quiet",
    )
    rows = []
    records = [r for r in read_log(log) if args.seed <= r["seed"] < args.seed + args.episodes]
    for checkpoint in args.checkpoints:
        for target in args.target_returns or [None]:
            settings = {} if target is None else {"target_return": target}
            cell = sorted(
                (r for r in records if r["cell"] == {"checkpoint": str(checkpoint), "settings": settings}),
                key=lambda r: r["seed"],
            )
            values = [r["normalized_score"] for r in cell]
            shown = "default" if target is None else f"{target:g}"
            rows.append(f"| `{checkpoint.name}` | {shown} | {score_cells(values)} | {len(values)} |")

    print("\n| checkpoint | target return | normalized score (mean ± std) | worst 5-seed mean | episodes |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print(f"\nseeds {args.seed}..{args.seed + args.episodes - 1}, full episodes")


if __name__ == "__main__":
    main()
