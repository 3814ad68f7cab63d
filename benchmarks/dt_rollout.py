"""Env steps/s of Decision Transformer rollouts on HalfCheetah-v5: seqrl's batched policy vs transformers' example loop.

The baseline is the loop of transformers' Decision Transformer example: one env, the whole history concatenated
and the last K=20 steps left-padded and re-encoded by transformers' model at every step. seqrl runs the same
model on N = 1, 4, 16, 64 envs with one model call per step for all of them (target: >= 3x the baseline at 16 envs).
The CPU is compute-bound here, so the model's achieved GFLOP/s is reported too.
Run: python benchmarks/dt_rollout.py [--checkpoint DIR] [--steps 300] [--threads 1] [--repeats 3]
"""

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from seqrl import DecisionTransformerConfig, DecisionTransformerModel
from seqrl.agents.loop import run_episodes
from seqrl.envs.make import make_env, make_vector_env
from seqrl.planners import load_agent
from seqrl.planners.metadata import META_FILE, write_json

ENV_ID = "HalfCheetah-v5"
CONTEXT = 20
RETURN_SCALE = 1000.0
TARGET_RETURN = 12000.0


class CallTimer:
    """Wraps a model call, counting calls and the seconds spent in them."""

    def __init__(self, call: Callable[..., Any]):
        self.call, self.calls, self.seconds = call, 0, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = self.call(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return result


def model_flops(config: DecisionTransformerConfig, batch: int, context: int, last_only: bool) -> int:
    """Floating-point operations (2 per multiply-add) of one model call over `batch` windows of `context` steps.

    The full forward runs every block on all 3K tokens; seqrl's `last_action` drops the final action token and
    runs the last block's attention output, projection and MLP for the last state token only.
    """
    tokens, width = 3 * context - last_only, config.hidden_size
    inner = config.n_inner or 4 * width
    qkv = 2 * width * 3 * width  # per token
    rest = 2 * (width * width + 2 * width * inner)  # per token: output projection and MLP
    attention = 2 * 2 * tokens * width  # per query token: scores and the weighted sum over all tokens
    io = 2 * 2 * width * (config.state_dim + config.act_dim + 1)  # per step: embeddings and prediction heads
    full_layers = config.n_layer - last_only
    per_window = tokens * full_layers * (qkv + rest + attention) + context * io
    if last_only:
        per_window += tokens * qkv + attention + rest
    return batch * per_window


def make_checkpoint(directory: Path) -> Path:
    """A randomly initialised HalfCheetah DT of the paper's size, with unit state statistics."""
    torch.manual_seed(0)
    config = DecisionTransformerConfig(state_dim=17, act_dim=6, max_ep_len=1000)
    DecisionTransformerModel(config).save_pretrained(directory)
    write_json(
        directory / META_FILE, {"kind": "dt", "env_id": ENV_ID, "state_mean": [0.0] * 17, "state_std": [1.0] * 17}
    )
    return directory


def transformers_loop(checkpoint: Path, steps: int) -> tuple[int, float, CallTimer]:
    """Steps and seconds of transformers' example evaluation loop on one env."""
    import transformers

    model = transformers.DecisionTransformerModel.from_pretrained(checkpoint).eval()
    model.forward = timer = CallTimer(model.forward)
    policy = load_agent(checkpoint, make_env(ENV_ID))  # only for the state statistics it resolved
    mean, std = policy.state_mean, policy.state_std
    env = make_env(ENV_ID)
    state_dim, act_dim = model.config.state_dim, model.config.act_dim
    start = time.perf_counter()
    observation, _ = env.reset(seed=0)
    states = torch.from_numpy(observation).float().reshape(1, state_dim)
    actions = torch.zeros((0, act_dim))
    returns_to_go = torch.tensor([[TARGET_RETURN / RETURN_SCALE]])
    timesteps = torch.zeros((1, 1), dtype=torch.long)
    for t in range(steps):
        actions = torch.cat([actions, torch.zeros((1, act_dim))])
        window = [
            x[-CONTEXT:] for x in ((states - mean) / std, actions, returns_to_go.reshape(-1, 1), timesteps.reshape(-1))
        ]
        pad = CONTEXT - len(window[0])
        padded = [torch.cat([torch.zeros((pad, *x.shape[1:]), dtype=x.dtype), x])[None] for x in window]
        mask = torch.cat([torch.zeros(pad, dtype=torch.long), torch.ones(CONTEXT - pad, dtype=torch.long)])[None]
        with torch.no_grad():
            _, action_preds, _ = model(
                states=padded[0],
                actions=padded[1],
                rewards=None,
                returns_to_go=padded[2],
                timesteps=padded[3],
                attention_mask=mask,
                return_dict=False,
            )
        actions[-1] = action_preds[0, -1]
        observation, reward, terminated, truncated, _ = env.step(action_preds[0, -1].numpy())
        states = torch.cat([states, torch.from_numpy(observation).float().reshape(1, state_dim)])
        returns_to_go = torch.cat([returns_to_go, returns_to_go[:, -1:] - reward / RETURN_SCALE], dim=1)
        timesteps = torch.cat([timesteps, torch.full((1, 1), t + 1)], dim=1)
    return steps, time.perf_counter() - start, timer


def seqrl_loop(checkpoint: Path, num_envs: int, steps: int) -> tuple[int, float, CallTimer]:
    """Env steps and seconds of seqrl's episode loop with the batched DT policy on `num_envs` envs."""
    env = make_env(ENV_ID) if num_envs == 1 else make_vector_env(ENV_ID, num_envs)
    agent = load_agent(checkpoint, make_env(ENV_ID), target_return=TARGET_RETURN)
    agent.model.last_action = timer = CallTimer(agent.model.last_action)
    start = time.perf_counter()
    results = list(run_episodes(agent, env, range(num_envs), max_steps=steps))
    seconds = time.perf_counter() - start
    env.close()
    return sum(r.length for r in results), seconds, timer


def main() -> None:
    """Time the baseline and seqrl at each env count and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, help="a HalfCheetah DT checkpoint (default: a random one of the paper's size)"
    )
    parser.add_argument("--steps", type=int, default=300, help="steps per env")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of every row; the median run is shown")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs: dict[tuple[str, int], list[tuple[int, float, CallTimer]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = args.checkpoint or make_checkpoint(Path(scratch))
        config = DecisionTransformerConfig.from_pretrained(checkpoint)
        for _ in range(args.repeats):
            runs.setdefault(("transformers example", 1), []).append(transformers_loop(checkpoint, args.steps))
            for num_envs in args.envs:
                runs.setdefault(("seqrl", num_envs), []).append(seqrl_loop(checkpoint, num_envs, args.steps))
    rows = []
    for (name, num_envs), results in runs.items():
        results.sort(key=lambda result: result[0] / result[1])
        rows.append((name, num_envs, *results[len(results) // 2]))
    baseline = rows[0][2] / rows[0][3]
    table = Table(
        title=f"Decision Transformer rollouts on {ENV_ID} (K={CONTEXT}, {torch.get_num_threads()} torch threads)"
    )
    for column in (
        "loop",
        "envs",
        "env steps",
        "seconds",
        "env steps/s",
        "vs transformers",
        "model share",
        "model GFLOP/s",
    ):
        table.add_column(column, justify="left" if column == "loop" else "right")
    for name, num_envs, env_steps, seconds, timer in rows:
        flops = model_flops(config, num_envs, CONTEXT, last_only=name == "seqrl") * timer.calls
        table.add_row(
            name,
            str(num_envs),
            f"{env_steps:,}",
            f"{seconds:.2f}",
            f"{env_steps / seconds:,.0f}",
            f"{env_steps / seconds / baseline:.1f}x",
            f"{timer.seconds / seconds:.0%}",
            f"{flops / timer.seconds / 1e9:.2f}",
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
