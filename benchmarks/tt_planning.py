"""Trajectory Transformer planning latency per env step: key/value cache vs the original (targets: >= 6x, >= 10x).

Hopper-sized model (observation 11, action 3, transition 16, block 159, 100 bins; 4 layers, 4 heads,
width 128), random init (latency does not depend on training). Each env step plans once from a full
context (4 past transitions of a random-action Hopper rollout + the observation: 75 tokens), with the
original's settings except beam width and horizon: (a) beam 32, horizon 5; (b) beam 128, horizon 15.
Both paths plan from the same prefixes with the same seeds and must return identical plans and values.
Each (setting, path) runs in its own process so that its peak resident memory (above the memory held
before planning) is its own. FLOPs are counted from the shapes of every model call (matrix products and
attention scores); CPU time is process time, the steadier figure on a shared machine.
Run: python benchmarks/tt_planning.py [--steps-a 5] [--steps-b 2] [--threads 1]
"""

import argparse
import ctypes
import math
import multiprocessing
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from seqrl import TrajectoryTransformerConfig, TrajectoryTransformerModel
from seqrl.planners.trajectory.beam import beam_plan
from seqrl.planners.trajectory.decoding import CachedDecoder, FullWindowDecoder
from seqrl.planners.trajectory.discretizer import Discretizer
from seqrl.planners.trajectory.planner import PlannerSettings, reward_value_estimator

OBSERVATION_DIM, ACTION_DIM, N_BINS, CONTEXT = 11, 3, 100, 4
TRANSITION_DIM = OBSERVATION_DIM + ACTION_DIM + 2
SETTINGS = {"a": PlannerSettings(beam_width=32, horizon=5), "b": PlannerSettings(beam_width=128, horizon=15)}


def hopper_model() -> TrajectoryTransformerModel:
    """The hopper-sized model, randomly initialised with a fixed seed."""
    torch.manual_seed(0)
    config = TrajectoryTransformerConfig(
        vocab_size=N_BINS, observation_dim=OBSERVATION_DIM, action_dim=ACTION_DIM, transition_dim=TRANSITION_DIM,
        block_size=10 * TRANSITION_DIM - 1,
    )
    return TrajectoryTransformerModel(config).eval()


def hopper_prefixes(count: int) -> tuple[Discretizer, list[torch.Tensor]]:
    """Bins fitted to a random-action Hopper rollout, and `count` 75-token prefixes taken from it."""
    env = gym.make("Hopper-v5", terminate_when_unhealthy=False)
    rng = np.random.default_rng(0)
    observation, _ = env.reset(seed=0)
    rows = []
    for _ in range(500):
        action = rng.uniform(-1, 1, ACTION_DIM)
        next_observation, reward, *_ = env.step(action)
        rows.append(np.concatenate([observation, action, [reward, 0.0]]))
        observation = next_observation
    rows = np.array(rows)
    rows[:, -1] = rng.normal(size=len(rows))  # stand-in values; the bins only need a spread
    discretizer = Discretizer.fit(rows, N_BINS)
    tokens = discretizer.discretize(rows)  # (steps, transition_dim)
    starts = np.linspace(0, len(rows) - CONTEXT - 1, count, dtype=int)
    prefixes = [torch.cat([tokens[s : s + CONTEXT].flatten(), tokens[s + CONTEXT, :OBSERVATION_DIM]]) for s in starts]
    return discretizer, prefixes


def count_flops(model: TrajectoryTransformerModel, totals: dict[str, float]) -> None:
    """Add every forward's FLOPs (linear layers, heads, attention scores and sums) to totals['flops']."""
    config = model.config
    width, layers = config.n_embd, config.n_layer
    per_token = 2 * (layers * 12 * width * width + width * (config.vocab_size + 1))

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        rows, new = args[0].shape
        past = kwargs.get("past_key_values")
        total = new + (0 if past is None else past[0][0].shape[2])
        totals["flops"] += rows * new * (per_token + layers * 4 * total * width)

    model.register_forward_pre_hook(hook, with_kwargs=True)


def memory_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in KiB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def run_path(setting: str, cached: bool, steps: int, threads: int) -> dict[str, Any]:
    """Plan `steps` env steps in this process; latencies, FLOPs, peak memory above the start and the plans."""
    torch.set_num_threads(threads)
    model = hopper_model()
    discretizer, prefixes = hopper_prefixes(steps)
    settings = SETTINGS[setting]
    estimate = reward_value_estimator(discretizer.select(slice(-2, None)), settings.percentile)
    max_tokens = min(model.config.block_size, settings.max_context_transitions * TRANSITION_DIM - 1)
    totals = {"flops": 0.0}
    count_flops(model, totals)
    decoder_class = CachedDecoder if cached else FullWindowDecoder
    warm_up = PlannerSettings(beam_width=2, horizon=2)  # first calls load code and set up kernels: not planning memory
    first = prefixes[0][None]
    beam_plan(decoder_class(model, max_tokens), first, [torch.Generator()], estimate, warm_up, OBSERVATION_DIM, ACTION_DIM)
    totals["flops"] = 0.0
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so that RSS is what is live
    Path("/proc/self/clear_refs").write_text("5")  # and restart the peak (VmHWM) from there (Linux)
    memory_before = memory_kib("VmRSS")
    wall, cpu, plans = [], [], []
    for step, prefix in enumerate(prefixes):
        generator = torch.Generator().manual_seed(step)
        started, started_cpu = time.perf_counter(), time.process_time()
        plan, value = beam_plan(
            decoder_class(model, max_tokens), prefix[None], [generator], estimate, settings, OBSERVATION_DIM, ACTION_DIM
        )
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        plans.append((plan[0], value.item()))
    peak = memory_kib("VmHWM") - memory_before
    return {"wall": wall, "cpu": cpu, "flops": totals["flops"] / steps, "peak_mb": peak / 1024, "plans": plans}


def in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` run in a new Python process (so that its peak memory is its own)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main() -> None:
    """Time both paths at both settings, check their plans agree, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-a", type=int, default=5, help="planned env steps at setting (a)")
    parser.add_argument("--steps-b", type=int, default=2, help="planned env steps at setting (b); ~1-2 min each uncached")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument("--settings", default="ab", help="which settings to run: a, b or ab")
    args = parser.parse_args()

    table = Table(title=f"TT planning per env step (medians), CPU, {args.threads} torch thread(s); speed-up of CPU time")
    for column in ("setting", "path", "steps", "wall ms", "CPU ms", "speed-up", "GFLOP/step", "FLOP ratio", "peak MB", "same plans"):
        table.add_column(column, justify="right", no_wrap=True)
    for setting in args.settings:
        steps = args.steps_a if setting == "a" else args.steps_b
        results = {cached: in_fresh_process(run_path, setting, cached, steps, args.threads) for cached in (False, True)}
        same = sum(
            torch.equal(plan_u, plan_c) and math.isclose(value_u, value_c, rel_tol=1e-5)
            for (plan_u, value_u), (plan_c, value_c) in zip(results[False]["plans"], results[True]["plans"])
        )
        config = SETTINGS[setting]
        for cached in (False, True):
            result, original = results[cached], results[False]
            table.add_row(
                f"({setting}) beam {config.beam_width}, H {config.horizon}" if not cached else "",
                "kv cache" if cached else "original",
                str(steps),
                f"{statistics.median(result['wall']) * 1e3:,.0f}",
                f"{statistics.median(result['cpu']) * 1e3:,.0f}",
                f"{statistics.median(original['cpu']) / statistics.median(result['cpu']):.1f}x",
                f"{result['flops'] / 1e9:,.1f}",
                f"{original['flops'] / result['flops']:.1f}x",
                f"{result['peak_mb']:,.0f}",
                f"{same}/{steps}" if cached else "",
            )
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
