"""Trajectory Transformer planning latency per env step: key/value cache vs the original (targets: >= 30x at both).

Hopper-sized model (observation 11, action 3, transition 16, block 159, 100 bins; 4 layers, 4 heads,
width 128), random init (latency does not depend on training). Each env step plans once from a full
context (4 past transitions of a random-action Hopper rollout + the observation: 75 tokens), with the
original's settings except beam width and horizon: (a) beam 32, horizon 5; (b) beam 128, horizon 15.
Both paths plan from the same prefixes with the same seeds and must return identical plans and values.
Then --envs envs planned together in one search against as many single-env searches one after another
(cached path), which must also agree. Each run is its own process so that its peak resident memory
(above the memory held before planning) is its own. FLOPs are counted from the shapes of every model
call (matrix products and attention scores); CPU time is process time, the steadier figure on a shared
machine; "matmul share" is the share of the profiled time spent in matrix products (addmm, mm, bmm).
On --device cuda the cached path is the CUDA-graph decoder, and times are wall times.
Last, the bundled Hopper TT at its bundled settings plans --bundled-steps real Hopper steps (after 5 to warm
up): CPU ms per env step (target <= 60), model calls per env step and what one costs, and where the time goes.
Run: python benchmarks/tt_planning.py [--steps-a 5] [--steps-b 2] [--envs 16] [--bundled-steps 20] [--threads 1]
[--device cpu]
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
from seqrl.planners.trajectory.decoding import CachedDecoder, FullWindowDecoder, GraphDecoder
from seqrl.planners.trajectory.discretizer import Discretizer
from seqrl.planners.trajectory.model import KVCache
from seqrl.planners.trajectory.options import PlannerSettings
from seqrl.planners.trajectory.planner import reward_value_estimator

OBSERVATION_DIM, ACTION_DIM, N_BINS, CONTEXT = 11, 3, 100, 4
TRANSITION_DIM = OBSERVATION_DIM + ACTION_DIM + 2
SETTINGS = {"a": PlannerSettings(beam_width=32, horizon=5), "b": PlannerSettings(beam_width=128, horizon=15)}
MATMULS = ("aten::addmm", "aten::mm", "aten::bmm")


def hopper_model() -> TrajectoryTransformerModel:
    """The hopper-sized model, randomly initialised with a fixed seed."""
    torch.manual_seed(0)
    config = TrajectoryTransformerConfig(
        vocab_size=N_BINS,
        observation_dim=OBSERVATION_DIM,
        action_dim=ACTION_DIM,
        transition_dim=TRANSITION_DIM,
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
    """Add every forward's and decode's FLOPs (linear layers, heads, attention scores and sums) to totals['flops']."""
    config = model.config
    width, layers = config.n_embd, config.n_layer
    qkv, rest, head = 2 * 3 * width * width, 2 * 9 * width * width, 2 * width * (config.vocab_size + 1)

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        rows, new = args[0].shape
        past = kwargs.get("past_key_values")
        total = new + (0 if past is None else past[0][0].shape[2])
        totals["flops"] += rows * new * (layers * (qkv + rest + 4 * total * width) + head)

    def decode(trajectories: torch.Tensor, cache: KVCache) -> torch.Tensor:
        # the last block computes queries, attention and MLP for the last new token only, the head too
        rows, new = trajectories.shape
        total = cache.length + new
        per_row = new * ((layers - 1) * (qkv + rest + 4 * total * width) + qkv) + rest + 4 * total * width + head
        totals["flops"] += rows * per_row
        return type(model).decode(model, trajectories, cache)

    model.register_forward_pre_hook(hook, with_kwargs=True)
    model.decode = decode


def decoder(model: TrajectoryTransformerModel, cached: bool, max_tokens: int, rows: int, device: str):
    """The planner's decoder on `device`: the original's, or the cached one (CUDA graphs on a GPU)."""
    if not cached:
        return FullWindowDecoder(model, max_tokens)
    return (GraphDecoder if device == "cuda" else CachedDecoder)(model, max_tokens, rows)


def matmul_share(profiled: Any, device: str) -> float:
    """The share of the profiled time (CPU, or the GPU's kernels) spent in matrix products."""
    events = profiled.key_averages()
    if device == "cuda":  # kernel time, counted with the op that launched it
        matmuls = sum(event.device_time_total for event in events if event.key in MATMULS)
        return matmuls / sum(event.self_device_time_total for event in events)
    return sum(event.self_cpu_time_total for event in events if event.key in MATMULS) / sum(
        event.self_cpu_time_total for event in events
    )


class Clock:
    """Process CPU time on CPU; wall time, after the GPU finishes, on CUDA."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __call__(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


def setup(setting: str, steps: int, threads: int, device: str) -> tuple:
    """Model, prefixes, estimator and window for a run in this process."""
    torch.set_num_threads(threads)
    model = hopper_model().to(device)
    discretizer, prefixes = hopper_prefixes(steps)
    settings = SETTINGS[setting]
    estimate = reward_value_estimator(discretizer.to(device).select(slice(-2, None)), settings.percentile)
    max_tokens = min(model.config.block_size, settings.max_context_transitions * TRANSITION_DIM - 1)
    return model, [prefix.to(device) for prefix in prefixes], settings, estimate, max_tokens


def warm_up_and_mark(model, cached: bool, max_tokens: int, prefix: torch.Tensor, estimate, device: str) -> int:
    """Plan once at a tiny setting (first calls load code and set up kernels: not planning memory); RSS after."""
    warm_up = PlannerSettings(beam_width=2, horizon=2)
    plan_decoder = decoder(model, cached, max_tokens, 4, device)
    generators = [torch.Generator(device)]
    beam_plan(plan_decoder, prefix[None], generators, estimate, warm_up, OBSERVATION_DIM, ACTION_DIM)
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so that RSS is what is live
    Path("/proc/self/clear_refs").write_text("5")  # and restart the peak (VmHWM) from there (Linux)
    return memory_kib("VmRSS")


def memory_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in KiB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def run_path(setting: str, cached: bool, steps: int, threads: int, device: str) -> dict[str, Any]:
    """Plan `steps` env steps in this process; latencies, FLOPs, matmul share, peak memory above the start, plans."""
    model, prefixes, settings, estimate, max_tokens = setup(setting, steps, threads, device)
    totals = {"flops": 0.0}
    count_flops(model, totals)
    memory_before = warm_up_and_mark(model, cached, max_tokens, prefixes[0], estimate, device)
    totals["flops"], clock = 0.0, Clock(device)
    wall, cpu, plans = [], [], []
    rows = settings.n_expand * settings.beam_width
    plan_decoder = decoder(model, cached, max_tokens, rows, device)
    for step, prefix in enumerate(prefixes):
        generator = torch.Generator(device).manual_seed(step)
        if cached and device != "cuda":
            plan_decoder = decoder(model, cached, max_tokens, rows, device)  # as the planner: fresh on CPU
        elif cached:
            plan_decoder.reset()  # kept on CUDA, with its graphs
        started, started_cpu = time.perf_counter(), clock()
        plan, value = beam_plan(
            plan_decoder, prefix[None], [generator], estimate, settings, OBSERVATION_DIM, ACTION_DIM
        )
        cpu.append(clock() - started_cpu)
        wall.append(time.perf_counter() - started)
        plans.append((plan[0].cpu(), value.item()))
    peak = memory_kib("VmHWM") - memory_before
    flops = totals["flops"] / steps
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiled:  # one more step, profiled, for the matmul share
        if cached and device == "cuda":
            plan_decoder.reset()
        elif cached:
            plan_decoder = decoder(model, cached, max_tokens, rows, device)
        generators = [torch.Generator(device)]
        beam_plan(plan_decoder, prefixes[0][None], generators, estimate, settings, OBSERVATION_DIM, ACTION_DIM)
    share = matmul_share(profiled, device)
    return {"wall": wall, "cpu": cpu, "flops": flops, "peak_mb": peak / 1024, "plans": plans, "matmul_share": share}


def run_envs(setting: str, envs: int, together: bool, threads: int, device: str) -> dict[str, Any]:
    """One env step for each of `envs` envs (cached path): one search over all of them, or one search per env."""
    model, prefixes, settings, estimate, max_tokens = setup(setting, envs, threads, device)
    memory_before = warm_up_and_mark(model, True, max_tokens, prefixes[0], estimate, device)
    groups = [list(range(envs))] if together else [[env] for env in range(envs)]
    rows = len(groups[0]) * settings.n_expand * settings.beam_width
    clock, plans = Clock(device), []
    plan_decoder = decoder(model, True, max_tokens, rows, device)
    started = clock()
    for group in groups:
        if device == "cuda":
            plan_decoder.reset()
        else:
            plan_decoder = decoder(model, True, max_tokens, rows, device)
        generators = [torch.Generator(device).manual_seed(env) for env in group]
        batch = torch.stack([prefixes[env] for env in group])
        plan, value = beam_plan(plan_decoder, batch, generators, estimate, settings, OBSERVATION_DIM, ACTION_DIM)
        plans += list(zip(plan.cpu(), value.tolist()))
    elapsed = clock() - started
    return {"seconds": elapsed, "peak_mb": (memory_kib("VmHWM") - memory_before) / 1024, "plans": plans}


def bundled_steps(steps: int, threads: int, device: str) -> dict[str, Any]:
    """Plan `steps` real Hopper steps with the bundled TT: CPU seconds per step, model calls, profiled op shares."""
    from seqrl.planners.registry import bundled_checkpoint, load_agent
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(threads)
    env = gym.make("Hopper-v5", terminate_when_unhealthy=False)
    agent = load_agent(bundled_checkpoint("Hopper-v5", "tt"), env, device=device)
    calls = {"decode": 0}
    decode = agent.model.decode

    def counted(*args: Any) -> torch.Tensor:
        calls["decode"] += 1
        return decode(*args)

    agent.model.decode = counted
    observation, _ = env.reset(seed=0)
    agent.reset(seed=0)
    clock, seconds = Clock(device), []

    def step() -> None:
        nonlocal observation
        started = clock()
        action = agent.act_batch(observation[None], [0])[0]
        seconds.append(clock() - started)
        observation, reward, *_ = env.step(action)
        agent.observe_batch(np.array([reward]), [0])

    for _ in range(5):
        step()
    seconds.clear()
    calls["decode"] = 0
    for _ in range(steps):
        step()
    decode_calls = calls["decode"] / steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as profiled:
        for _ in range(3):
            step()
    events = profiled.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    linear = sum(event.self_cpu_time_total for event in events if event.key == "aten::addmm")
    linear_calls = sum(event.count for event in events if event.key == "aten::addmm")
    return {
        "settings": {name: agent.settings()[name] for name in ("beam_width", "horizon", "n_expand")},
        "seconds": statistics.median(seconds),
        "decode_calls": decode_calls,
        "linear_share": linear / total,
        "linear_us": linear / linear_calls,
        "matmul_share": matmul_share(profiled, device),
    }


def print_bundled(args: argparse.Namespace) -> None:
    """The bundled Hopper TT at its bundled settings: time per env step, model calls, where the time goes."""
    result = in_fresh_process(bundled_steps, args.bundled_steps, args.threads, args.device)
    time_kind = "wall" if args.device == "cuda" else "CPU"
    settings = ", ".join(f"{name} {value}" for name, value in result["settings"].items())
    table = Table(title=f"bundled Hopper TT ({settings}), {args.bundled_steps} real Hopper steps, {args.device}")
    columns = (f"{time_kind} ms / env step", "target", "model calls / step", f"{time_kind} ms / call",
               "linear layers' share", "us / linear", "matmul share")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    table.add_row(
        f"{result['seconds'] * 1e3:,.0f}",
        "<= 60",
        f"{result['decode_calls']:.0f}",
        f"{result['seconds'] * 1e3 / result['decode_calls']:.2f}",
        f"{result['linear_share']:.0%}",
        f"{result['linear_us']:.0f}",
        f"{result['matmul_share']:.0%}",
    )
    Console(width=150).print(table)


def identical_plans(these: list, those: list) -> int:
    """How many (plan, value) pairs agree to the bit."""
    pairs = zip(these, those)
    return sum(torch.equal(plan_a, plan_b) and value_a == value_b for (plan_a, value_a), (plan_b, value_b) in pairs)


def same_plans(these: list, those: list) -> int:
    """How many (plan, value) pairs agree: tokens exactly, values to float32 rounding."""
    return sum(
        torch.equal(plan_a, plan_b) and math.isclose(value_a, value_b, rel_tol=1e-5)
        for (plan_a, value_a), (plan_b, value_b) in zip(these, those)
    )


def in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` run in a new Python process (so that its peak memory is its own)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main() -> None:
    """Time both paths at both settings, then many envs together against one by one; check plans agree."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-a", type=int, default=5, help="planned env steps at setting (a)")
    parser.add_argument(
        "--steps-b", type=int, default=2, help="planned env steps at setting (b); ~1-2 min each uncached"
    )
    parser.add_argument("--envs", type=int, default=16, help="envs planned together in the many-env rows (0: none)")
    parser.add_argument("--bundled-steps", type=int, default=20, help="env steps of the bundled Hopper TT (0: none)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument("--settings", default="ab", help="which settings to run: a, b, ab or '' (none)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to plan")
    args = parser.parse_args()

    time_kind = "wall" if args.device == "cuda" else "CPU"
    table = Table(
        title=f"TT planning per env step (medians), {args.device}, {args.threads} torch thread(s); "
        f"speed-up of {time_kind} time"
    )
    columns = ("setting", "path", "steps", "wall ms", f"{time_kind} ms", "speed-up", "GFLOP/step", "FLOP ratio",
               "GFLOP/s", "matmul share", "peak MB", "same plans")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for setting in args.settings:
        steps = args.steps_a if setting == "a" else args.steps_b
        results = {
            cached: in_fresh_process(run_path, setting, cached, steps, args.threads, args.device)
            for cached in (False, True)
        }
        same = same_plans(results[False]["plans"], results[True]["plans"])
        config = SETTINGS[setting]
        for cached in (False, True):
            result, original = results[cached], results[False]
            seconds = statistics.median(result["cpu"])
            table.add_row(
                f"({setting}) beam {config.beam_width}, H {config.horizon}" if not cached else "",
                "kv cache" if cached else "original",
                str(steps),
                f"{statistics.median(result['wall']) * 1e3:,.0f}",
                f"{seconds * 1e3:,.0f}",
                f"{statistics.median(original['cpu']) / seconds:.1f}x",
                f"{result['flops'] / 1e9:,.1f}",
                f"{original['flops'] / result['flops']:.1f}x",
                f"{result['flops'] / 1e9 / seconds:,.1f}",
                f"{result['matmul_share']:.0%}",
                f"{result['peak_mb']:,.0f}",
                f"{same}/{steps}" if cached else "",
            )
    if args.settings:
        Console(width=150).print(table)
    if args.envs:
        print_many_envs(args)
    if args.bundled_steps:
        print_bundled(args)


def print_many_envs(args: argparse.Namespace) -> None:
    """Env steps/s of `args.envs` envs planned in one search against one search per env, cached path."""
    time_kind = "wall" if args.device == "cuda" else "CPU"
    title = f"{args.envs} envs, one env step each, kv cache, {args.device}; env steps/s of {time_kind} time"
    table = Table(title=title)
    for column in ("setting", "search", f"{time_kind} s", "env steps/s", "speed-up", "peak MB", "same plans (bits)"):
        table.add_column(column, justify="right", no_wrap=True)
    for setting in args.settings:
        alone, together = (
            in_fresh_process(run_envs, setting, args.envs, batched, args.threads, args.device)
            for batched in (False, True)
        )
        config = SETTINGS[setting]
        for result, label in ((alone, "one env at a time"), (together, f"{args.envs} envs together")):
            table.add_row(
                f"({setting}) beam {config.beam_width}, H {config.horizon}" if result is alone else "",
                label,
                f"{result['seconds']:,.1f}",
                f"{args.envs / result['seconds']:,.2f}",
                f"{alone['seconds'] / result['seconds']:.1f}x",
                f"{result['peak_mb']:,.0f}",
                f"{identical_plans(alone['plans'], together['plans'])}/{args.envs}" if result is together else "",
            )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
