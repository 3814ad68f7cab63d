"""Why a Trajectory Transformer plans well or badly: its token predictions on held-out data, and its plans' values.

    python benchmarks/tt_diagnose.py RUN                         # a `seqrl train tt` output directory
    python benchmarks/tt_diagnose.py RUN --episodes 2 --max-steps 300 --beam-width 8 --horizon 5
    python benchmarks/tt_diagnose.py RUN --windows 0 --episodes 0 --imitation-steps 200

1. Held-out prediction, on the episodes the run held out (the same split as training): per token kind
   (observation, action, reward, value) the cross-entropy in nats against the log(bins) nats of
   guessing from the marginal (quantile bins are equally full), top-1 accuracy, the share within one
   bin, and the error of the distribution's mean in units of the data's standard deviation.
2. Planned vs realized, over real episodes: at every step, the value the planner expects of its best
   plan (discounted predicted rewards plus the predicted value) against the discounted return that
   followed (the terminal reward replaced by the training's penalty; steps whose return the step limit
   cuts short are left out), and the plan's predicted first
   reward against the reward that came.
3. Imitation (--imitation-steps N): the planner as a greedy policy (beam 1, horizon 1, top-1 action
   tokens), first on the held-out episodes' first N steps with the context the data gives (each step
   is told the action the data took, so the context follows the data): its actions against the data's
   (mean absolute error, correlation per action dimension); then in closed loop, acting on its own
   actions in the env for N steps from reset: reward per step against the data's over its first N.
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


GREEDY = {"beam_width": 1, "n_expand": 1, "horizon": 1, "k_act": 1, "cdf_act": None}  # imitation, no search


@torch.inference_mode()
def imitation(run: Path, steps: int, episodes: int) -> dict[str, str]:
    """Greedy-policy actions against held-out data actions (context from the data), and closed-loop reward."""
    meta = json.loads((run / META_FILE).read_text())
    training = meta["training"]
    dataset = load_dataset(training["dataset"])
    _, held_ids = split_episodes(len(dataset.episodes), training["holdout"], training["seed"])
    env = gym.make(meta["env_id"])
    agent = load_agent(run, env, **GREEDY)
    taken, chosen, data_rewards = [], [], []
    for index in held_ids[:episodes]:
        episode = dataset.episodes[index]
        agent.reset(SEED, slot=0)
        for t in range(min(steps, len(episode.actions))):
            chosen.append(agent.act_batch(episode.observations[t][None], [0])[0])
            taken.append(episode.actions[t])
            agent.state(0).action = episode.actions[t].astype(np.float64)  # the context follows the data
            agent.observe_batch(episode.rewards[t : t + 1], [0])
        data_rewards.append(episode.rewards[:steps].mean())
    taken, chosen = np.array(taken), np.array(chosen)
    correlation = [np.corrcoef(chosen[:, j], taken[:, j])[0, 1] for j in range(taken.shape[1])]
    closed_rewards = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=SEED + episode)
        agent.reset(SEED + episode, slot=0)
        rewards = []
        for _ in range(steps):
            action = agent.act_batch(observation[None], [0])[0]
            observation, reward, terminated, truncated, _ = env.step(action)
            agent.observe_batch(np.array([reward]), [0])
            rewards.append(reward)
            if terminated or truncated:
                break
        closed_rewards.append(np.mean(rewards))
    return {
        "held-out episodes": f"{len(data_rewards)}, first {steps} steps each",
        "data context: |action - data action| (mean)": f"{np.abs(chosen - taken).mean():.3f}",
        "data context: correlation per action dimension": " ".join(f"{c:.2f}" for c in correlation),
        "data context: data action std per dimension": " ".join(f"{v:.2f}" for v in taken.std(0)),
        "closed loop: reward per step (mean over episodes)": f"{np.mean(closed_rewards):.2f}",
        "data: reward per step over the same steps": f"{np.mean(data_rewards):.2f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `seqrl train tt` output directory")
    parser.add_argument("--windows", type=int, default=2048, help="held-out windows to score (0: skip part 1)")
    parser.add_argument("--episodes", type=int, default=2, help="episodes to plan (0: skip part 2)")
    parser.add_argument("--max-steps", type=int, default=1000, help="step limit of each episode")
    parser.add_argument("--beam-width", type=int, default=None, help="planner beam width (default: the checkpoint's)")
    parser.add_argument("--horizon", type=int, default=None, help="planner horizon (default: the checkpoint's)")
    parser.add_argument("--imitation-steps", type=int, default=0, help="steps of part 3 per episode (0: skip it)")
    parser.add_argument("--imitation-episodes", type=int, default=3, help="episodes of part 3, each way")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bins = json.loads((args.run / META_FILE).read_text())["n_bins"]
    if args.windows:
        print(f"held-out prediction of {args.run} ({args.windows} windows; marginal guess {math.log(bins):.2f} nats)")
        print(f"{'kind':<12} {'nats':>6} {'top-1':>6} {'±1 bin':>7} {'|mean err|/std':>15}")
        for kind, nats, top1, near, error in held_out_prediction(args.run, args.windows):
            print(f"{kind:<12} {nats:6.2f} {top1:6.1%} {near:7.1%} {error:15.3f}")
    if args.episodes:
        settings = {name: value for name in ("beam_width", "horizon") if (value := getattr(args, name)) is not None}
        print(f"planned vs realized over {args.episodes} episodes (seeds {SEED}+), settings {settings or 'stored'}")
        for name, value in planned_vs_realized(args.run, args.episodes, args.max_steps, settings).items():
            print(f"  {name}: {value:.3f}" if isinstance(value, float) else f"  {name}: {value}")
    if args.imitation_steps:
        print(f"imitation by the greedy planner {GREEDY} (closed-loop seeds {SEED}+)")
        for name, value in imitation(args.run, args.imitation_steps, args.imitation_episodes).items():
            print(f"  {name}: {value}")


if __name__ == "__main__":
    main()
