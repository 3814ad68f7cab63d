"""How precisely a dataset's behaviour must be imitated to control, and what the TT's tokens cost: BC references.

    python benchmarks/bc_reference.py zoo/halfcheetah/medium-v0 --env HalfCheetah-v5
    python benchmarks/bc_reference.py zoo/hopper/medium-v0 --env Hopper-v5 --episodes 5

Behaviour cloning by least squares on the state, fitted to the training episodes of the split `seqrl train`
uses (--holdout, --seed), then with the same split:
1. linear: actions as an affine function of the observation (clipped to the action bounds);
2. MLP: two hidden layers of 256 (ReLU), mean-squared error, Adam, on standardized observations;
3. MLP on tokens: the same, fed the bin midpoints of the observation's tokens (the TT's quantile bins,
   --n-bins per dimension, fitted as `seqrl train tt` fits them), so the TT's input resolution;
4. the same, its actions also replaced by their bins' midpoints, so the TT's output resolution too.
Each row gives the held-out action error (mean absolute, and in units of each dimension's standard
deviation) and the normalized score of --episodes closed-loop episodes (seeds 20000+, disjoint from the
results table's 0-9). A row that scores near the behaviour says that input and output resolution (and a
state-only policy) suffice; one that does not, with a small error, says how little error the gait forgives.
"""

import argparse

import gymnasium as gym
import numpy as np
import torch
from seqrl.envs.datasets import load_dataset
from seqrl.envs.families import normalized_score
from seqrl.planners.training import split_episodes
from seqrl.planners.trajectory.discretizer import Discretizer

SEED = 20_000  # episode seeds disjoint from the results table's (0-9) and held-out sweeps' (100-149)


def fit_mlp(inputs: np.ndarray, actions: np.ndarray, epochs: int, seed: int) -> torch.nn.Module:
    """A 256-256 ReLU MLP from standardized inputs to actions, trained on mean-squared error."""
    torch.manual_seed(seed)
    x, y = torch.tensor(inputs, dtype=torch.float32), torch.tensor(actions, dtype=torch.float32)
    width = 256
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, y.shape[1]),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(256):
            loss = ((net(x[batch]) - y[batch]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


def closed_loop(env_id: str, policy, episodes: int) -> list[float]:
    """Normalized scores of `episodes` seeded episodes of `policy(observation) -> action`."""
    env = gym.make(env_id)
    scores = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=SEED + episode)
        total, done = 0.0, False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(policy(observation))
            total += reward
            done = terminated or truncated
        scores.append(normalized_score(env_id, total))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="dataset id, as `seqrl train --dataset` takes it")
    parser.add_argument("--env", required=True, help="gymnasium env id of the dataset")
    parser.add_argument("--episodes", type=int, default=3, help="closed-loop episodes per row")
    parser.add_argument("--epochs", type=int, default=15, help="MLP training epochs")
    parser.add_argument("--n-bins", type=int, default=100, help="TT bins per dimension (rows 3 and 4)")
    parser.add_argument("--holdout", type=float, default=0.05, help="held-out fraction of episodes, as training's")
    parser.add_argument("--seed", type=int, default=0, help="split and MLP seed, as training's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    episodes = load_dataset(args.dataset).episodes
    train_ids, held_ids = split_episodes(len(episodes), args.holdout, args.seed)

    def steps(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chosen = [episodes[i] for i in ids]
        return (
            np.concatenate([e.observations for e in chosen]),
            np.concatenate([e.actions for e in chosen]).astype(np.float64),
        )

    (train_obs, train_act), (held_obs, held_act) = steps(train_ids), steps(held_ids)
    obs_dim = train_obs.shape[1]
    bins = Discretizer.fit(np.concatenate(steps(np.arange(len(episodes))), axis=1), args.n_bins)  # as the TT fits
    observation_bins, action_bins = bins.select(slice(0, obs_dim)), bins.select(slice(obs_dim, None))
    space = gym.make(args.env).action_space
    low, high = space.low, space.high
    mean, std = train_obs.mean(0), train_obs.std(0) + 1e-8

    def tokens(observations: np.ndarray) -> np.ndarray:
        return observation_bins.reconstruct(observation_bins.discretize(observations)).double().numpy()

    weights, *_ = np.linalg.lstsq(np.c_[train_obs, np.ones(len(train_obs))], train_act, rcond=None)
    mlp = fit_mlp((train_obs - mean) / std, train_act, args.epochs, args.seed)
    token_mlp = fit_mlp((tokens(train_obs) - mean) / std, train_act, args.epochs, args.seed)

    @torch.inference_mode()
    def run(net: torch.nn.Module, observations: np.ndarray) -> np.ndarray:
        return net(torch.tensor((observations - mean) / std, dtype=torch.float32)).double().numpy()

    rows = {
        "linear": lambda o: np.c_[o, np.ones(len(o))] @ weights,
        "MLP": lambda o: run(mlp, o),
        "MLP on tokens": lambda o: run(token_mlp, tokens(o)),
        "MLP on tokens, binned actions": lambda o: (
            action_bins.reconstruct(action_bins.discretize(np.clip(run(token_mlp, tokens(o)), low, high)))
            .double()
            .numpy()
        ),
    }
    split = f"{len(train_ids)} training, {len(held_ids)} held-out episodes"
    print(f"{args.dataset}: {split}; {args.episodes} closed-loop episodes per row")
    print(f"{'policy':<31} {'|err|':>6} {'|err|/std':>10} {'score':>14}")
    for name, predict in rows.items():
        error = np.abs(np.clip(predict(held_obs), low, high) - held_act)
        scores = closed_loop(args.env, lambda o, p=predict: np.clip(p(o[None])[0], low, high), args.episodes)
        spread = f"{np.mean(scores):.1f} ± {np.std(scores):.1f}"
        print(f"{name:<31} {error.mean():6.3f} {(error / held_act.std(0)).mean():10.3f} {spread:>14}", flush=True)


if __name__ == "__main__":
    main()
