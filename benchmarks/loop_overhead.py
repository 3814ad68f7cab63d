"""Env steps/s of seqrl's episode loop with RandomAgent vs a bare env.step loop on Hopper-v5 (target: >= 90%).

Both loops run the same seeded episodes with the same action sampler, so they take the same steps
(checked); the difference is the loop's own cost. Run: python benchmarks/loop_overhead.py
"""

import argparse
import statistics
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from seqrl.agents.loop import run_episodes
from seqrl.agents.random import RandomAgent
from seqrl.envs.make import make_env, make_vector_env


def bare_loop(env_id: str, episodes: int) -> tuple[int, float, float]:
    """Steps, summed return and seconds of a plain env.step loop drawing RandomAgent's actions."""
    env = make_env(env_id)
    low = env.action_space.low.astype(np.float64)
    high = env.action_space.high.astype(np.float64)
    steps, total_return = 0, 0.0
    start = time.perf_counter()
    for episode in range(episodes):
        env.reset(seed=episode)
        rng = np.random.default_rng(episode)
        done = False
        while not done:
            action = rng.uniform(low, high).astype(env.action_space.dtype)
            _, reward, terminated, truncated, _ = env.step(action)
            total_return += reward
            steps += 1
            done = terminated or truncated
    seconds = time.perf_counter() - start
    env.close()
    return steps, total_return, seconds


def seqrl_loop(env_id: str, episodes: int, num_envs: int) -> tuple[int, float, float]:
    """Steps, summed return and seconds of seqrl's run_episodes with RandomAgent on `num_envs` envs."""
    env = make_env(env_id) if num_envs == 1 else make_vector_env(env_id, num_envs)
    agent = RandomAgent(env.action_space if num_envs == 1 else env.single_action_space)
    start = time.perf_counter()
    results = list(run_episodes(agent, env, range(episodes)))
    seconds = time.perf_counter() - start
    env.close()
    return sum(r.length for r in results), sum(r.episode_return for r in results), seconds


def main() -> None:
    """Time each loop `--repeats` times, interleaved, and print the median steps/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes per timed run (fixed seeds 0..N-1)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    loops = {
        "bare env.step loop": lambda: bare_loop(args.env, args.episodes),
        "seqrl loop, 1 env": lambda: seqrl_loop(args.env, args.episodes, 1),
        "seqrl loop, vector env x4": lambda: seqrl_loop(args.env, args.episodes, 4),
    }
    timings: dict[str, list[float]] = {name: [] for name in loops}
    reference = None
    for _ in range(args.repeats):  # interleaved, so a busy machine slows every loop alike
        for name, run in loops.items():
            steps, total_return, seconds = run()
            if reference is None:
                reference = (steps, total_return)
            if steps != reference[0] or not np.isclose(total_return, reference[1]):
                raise SystemExit(f"{name} took different steps than the bare loop: {steps} vs {reference[0]}")
            timings[name].append(steps / seconds)
    rates = {name: statistics.median(values) for name, values in timings.items()}

    table = Table(
        title=f"{args.env}, RandomAgent, {args.episodes} episodes ({reference[0]} steps), median of {args.repeats}"
    )
    table.add_column("loop")
    table.add_column("steps/s", justify="right")
    table.add_column("vs bare", justify="right")
    bare = rates["bare env.step loop"]
    for name, rate in rates.items():
        table.add_row(name, f"{rate:,.0f}", f"{100 * rate / bare:.1f}%")
    Console().print(table)


if __name__ == "__main__":
    main()
