"""Episodes per hour of `seqrl evaluate` on a TT grid with 1 and 2 workers, local processes and a local Ray cluster.

    python benchmarks/evaluate_scaling.py                       # bundled Hopper TT, beam 32, horizon 5
    python benchmarks/evaluate_scaling.py --episodes 4 --max-steps 40

The grid is the bundled Hopper TT planning at beam 32 and horizon 5, two cells (cdf_act 0.6 and 0.9),
--episodes per cell of --max-steps steps, one torch thread per worker. The baseline is one
`seqrl rollout` per cell, run one after the other. Times are each command's wall time, start-up
included; every run must log the same returns as the rollouts, episode by episode.
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

GRID = ["--agent", "tt", "--set", "beam_width=32", "--set", "horizon=5"]
CDF_ACT = ("0.6", "0.9")


def timed(command: list[str]) -> float:
    """Run a command (failing loudly), returning its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def returns(log: Path) -> dict[tuple[float, int], float]:
    """Return of each (cdf_act, episode) in a log."""
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return {(line["config"]["cdf_act"], line["episode"]): line["return"] for line in lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=4, help="episodes per cell")
    parser.add_argument("--max-steps", type=int, default=40, help="steps per episode")
    args = parser.parse_args()
    common = [
        "--env",
        "Hopper-v5",
        "--episodes",
        str(args.episodes),
        "--max-steps",
        str(args.max_steps),
        "--threads",
        "1",
        "--quiet",
    ]
    total = len(CDF_ACT) * args.episodes
    with tempfile.TemporaryDirectory() as scratch:
        logs = Path(scratch)
        seconds = {
            "seqrl rollout, one per cell": sum(
                timed(
                    [
                        "seqrl",
                        "rollout",
                        *common,
                        "--agent",
                        "tt",
                        "--beam-width",
                        "32",
                        "--horizon",
                        "5",
                        "--cdf-act",
                        cdf_act,
                        "--log",
                        str(logs / "rollout.jsonl"),
                    ]
                )
                for cdf_act in CDF_ACT
            )
        }
        expected = returns(logs / "rollout.jsonl")
        for label, options in (
            ("evaluate, 1 local worker", ["--workers", "1"]),
            ("evaluate, 2 local workers", ["--workers", "2"]),
            ("evaluate, Ray local, 1 worker", ["--workers", "1", "--ray", "local"]),
            ("evaluate, Ray local, 2 workers", ["--workers", "2", "--ray", "local"]),
        ):
            log = logs / f"{label.replace(' ', '_').replace(',', '')}.jsonl"
            seconds[label] = timed(
                [
                    "seqrl",
                    "evaluate",
                    *common,
                    *GRID,
                    "--set",
                    f"cdf_act={','.join(CDF_ACT)}",
                    *options,
                    "--log",
                    str(log),
                ]
            )
            if returns(log) != expected:
                raise SystemExit(f"{label}: returns differ from seqrl rollout's")
    base = seconds["evaluate, 1 local worker"]
    print(
        f"\n{total} episodes ({len(CDF_ACT)} cells x {args.episodes}) of at most {args.max_steps} steps; "
        "returns equal to seqrl rollout's in every run\n"
    )
    print("| run | wall s | episodes/hour | vs 1 local worker |")
    print("| --- | ---: | ---: | ---: |")
    for label, wall in seconds.items():
        print(f"| {label} | {wall:.1f} | {total / wall * 3600:,.0f} | {base / wall:.2f}x |")
    for workers in (1, 2):
        local = seconds[f"evaluate, {workers} local worker{'s' if workers > 1 else ''}"]
        ray = seconds[f"evaluate, Ray local, {workers} worker{'s' if workers > 1 else ''}"]
        print(f"Ray overhead over the local pool, {workers} worker(s): {(ray / local - 1) * 100:+.1f}%")


if __name__ == "__main__":
    main()
