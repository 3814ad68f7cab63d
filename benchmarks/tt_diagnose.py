"""Why a Trajectory Transformer plans well or badly: its token predictions on held-out data, and its plans' values.

    python benchmarks/tt_diagnose.py RUN                         # a `seqrl train tt` output directory
    python benchmarks/tt_diagnose.py RUN --episodes 2 --max-steps 300 --beam-width 8 --horizon 5

1. Held-out prediction, on the episodes the run held out (the same split as training): per token kind
   (observation, action, reward, value) the cross-entropy in nats against the log(bins) nats of
   guessing from the marginal (quantile bins are equally full), top-1 accuracy, the share within one
   bin, and the error of the distribution's mean in units of the data's standard deviation.
2. Planned vs realized, over real episodes: at every step, the value the planner expects of its best
   plan (discounted predicted rewards plus the predicted value) against the discounted return that
   followed (the terminal reward replaced by the training's penalty; steps whose return the step limit
   cuts short are left out), and the plan's predicted first
   reward against the reward that came.
"""

import argparse
import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from seqrl.envs.datasets import load_dataset
from seqrl.planners.metadata import META_FILE
from seqrl.planners.registry import load_agent
from seqrl.planners.training import split_episodes
from seqrl.planners.trajectory.data import episode_transitions, token_windows
from seqrl.planners.trajectory.discretizer import DISCRETIZER_FILE, Discretizer
from seqrl.planners.trajectory.model import TrajectoryTransformerModel

FULL_RETURN_STEPS = 460  # 0.99^460 < 0.01: a return cut off this far ahead misses under 1% of its discount weight
SEED = 20_000  # episode seeds disjoint from the results table's (0-9) and held-out sweeps' (100-149)


@torch.inference_mode()
def held_out_prediction(run: Path, windows: int) -> list[tuple[str, float, float, float, float]]:
    """Rows (kind, cross-entropy, top-1, within one bin, mean error / std) over held-out windows."""
    meta = json.loads((run / META_FILE).read_text())
    training = meta["training"]
    model = TrajectoryTransformerModel.from_pretrained(run).eval()
    discretizer = Discretizer.load(run / DISCRETIZER_FILE)
    dataset = load_dataset(",".join(meta["datasets"]))
    transitions = [episode_transitions(e, meta["discount"], meta["termination_penalty"]) for e in dataset.episodes]
    _, held_ids = split_episodes(len(transitions), training["holdout"], training["seed"])
    held = [transitions[i] for i in held_ids]
    data = token_windows(held, discretizer, meta["sequence_length"], meta["max_path_length"])
    chosen = torch.from_numpy(np.random.default_rng(0).permutation(len(data))[:windows])
    std = torch.from_numpy(np.concatenate(held).std(0)).float()  # (transition_dim,)
    config = model.config
    obs, act = config.observation_dim, config.action_dim
    kinds = {
        "observation": range(obs),
        "action": range(obs, obs + act),
        "reward": [obs + act],
        "value": [obs + act + 1],
    }
    sums = {kind: np.zeros(4) for kind in kinds}
    counts = dict.fromkeys(kinds, 0)
    for part in chosen.split(64):
        x, y, _ = data[part]
        probs = model(x, use_cache=False).logits.float().softmax(-1)  # (batch, length, vocab + 1)
        dims = (torch.arange(1, y.shape[1] + 1) % config.transition_dim).expand_as(y)  # dimension of each target
        real = y < discretizer.n_bins  # targets past an episode's end are the stop token
        bins = probs[..., : discretizer.n_bins]
        mean = (bins / bins.sum(-1, keepdim=True) * discretizer.midpoints[dims]).sum(-1)
        truth = discretizer.midpoints[dims, y.clamp(max=discretizer.n_bins - 1)]
        error = (mean - truth).abs() / std[dims].clamp(min=1e-8)
        cross_entropy = -probs.gather(-1, y[..., None]).squeeze(-1).clamp(min=1e-12).log()
        guess = probs.argmax(-1)
        for kind, members in kinds.items():
            where = real & torch.isin(dims, torch.tensor(list(members)))
            sums[kind] += [
                cross_entropy[where].sum().item(),
                (guess == y)[where].sum().item(),
                ((guess - y).abs() <= 1)[where].sum().item(),
                error[where].sum().item(),
            ]
            counts[kind] += int(where.sum())
    return [(kind, *(sums[kind] / max(1, counts[kind]))) for kind in kinds]


def planned_vs_realized(run: Path, episodes: int, max_steps: int, settings: dict) -> dict[str, float]:
    """Correlation and bias of planned values against realized discounted returns, and of first rewards."""
    meta = json.loads((run / META_FILE).read_text())
    env = gym.make(meta["env_id"], max_episode_steps=max_steps)
    agent = load_agent(run, env, **settings)
    discount, penalty = meta["discount"], meta["termination_penalty"]
    obs_act = agent.observation_dim + agent.action_dim
    planned, realized, predicted_rewards, rewards_seen, returns = [], [], [], [], []
    for episode in range(episodes):
        observation, _ = env.reset(seed=SEED + episode)
        agent.reset(SEED + episode, slot=0)
        values, first_rewards, rewards, episode_return = [], [], [], 0.0
        done = False
        while not done:
            action = agent.act_batch(observation[None], [0])[0]
            state = agent.state(0)
            values.append(state.plan_value)
            first_rewards.append(agent.discretizer.reconstruct(state.plan[0])[obs_act].item())
            observation, reward, terminated, truncated, _ = env.step(action)
            agent.observe_batch(np.array([reward]), [0])
            rewards.append(penalty if terminated else reward)
            episode_return += reward
            done = terminated or truncated
        returns.append(episode_return)
        to_go = np.zeros(len(rewards))
        for t in range(len(rewards) - 1, -1, -1):
            to_go[t] = rewards[t] + (discount * to_go[t + 1] if t + 1 < len(rewards) else 0.0)
        # a step whose future the step limit cut short has a truncated return: keep only those it barely touches
        known = len(rewards) if terminated else max(0, len(rewards) - FULL_RETURN_STEPS)
        planned += values[:known]
        realized += list(to_go[:known])
        predicted_rewards += first_rewards
        rewards_seen += rewards
    planned, realized = np.array(planned), np.array(realized)
    predicted_rewards, rewards_seen = np.array(predicted_rewards), np.array(rewards_seen)
    return {
        "episodes": episodes,
        "mean return": float(np.mean(returns)),
        "mean length": len(rewards_seen) / episodes,
        "planned value (mean)": float(planned.mean()),
        "realized discounted return (mean)": float(realized.mean()),
        "steps compared": len(planned),
        "value correlation": float(np.corrcoef(planned, realized)[0, 1]) if len(planned) > 1 else float("nan"),
        "first reward: predicted - real (mean)": float((predicted_rewards - rewards_seen).mean()),
        "first reward correlation": float(np.corrcoef(predicted_rewards, rewards_seen)[0, 1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `seqrl train tt` output directory")
    parser.add_argument("--windows", type=int, default=2048, help="held-out windows to score")
    parser.add_argument("--episodes", type=int, default=2, help="episodes to plan (0: skip part 2)")
    parser.add_argument("--max-steps", type=int, default=1000, help="step limit of each episode")
    parser.add_argument("--beam-width", type=int, default=None, help="planner beam width (default: the checkpoint's)")
    parser.add_argument("--horizon", type=int, default=None, help="planner horizon (default: the checkpoint's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bins = json.loads((args.run / META_FILE).read_text())["n_bins"]
    print(f"held-out prediction of {args.run} ({args.windows} windows; marginal guess {math.log(bins):.2f} nats)")
    print(f"{'kind':<12} {'nats':>6} {'top-1':>6} {'±1 bin':>7} {'|mean err|/std':>15}")
    for kind, nats, top1, near, error in held_out_prediction(args.run, args.windows):
        print(f"{kind:<12} {nats:6.2f} {top1:6.1%} {near:7.1%} {error:15.3f}")
    if args.episodes:
        settings = {name: value for name in ("beam_width", "horizon") if (value := getattr(args, name)) is not None}
        print(f"planned vs realized over {args.episodes} episodes (seeds {SEED}+), settings {settings or 'stored'}")
        for name, value in planned_vs_realized(args.run, args.episodes, args.max_steps, settings).items():
            print(f"  {name}: {value:.3f}" if isinstance(value, float) else f"  {name}: {value}")


if __name__ == "__main__":
    main()
