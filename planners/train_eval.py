"""Evaluation during training: seeded episodes of the current weights in the data's env; the best kept in OUT/best/."""

import json
import tempfile
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from seqrl import SeqrlError
from seqrl.agents.loop import evaluate
from seqrl.envs.datasets import OfflineDataset
from seqrl.envs.make import make_env, make_vector_env
from seqrl.planners.checkpoint import atomic_directory
from seqrl.planners.train_options import RunArgs

BEST_DIR = "best"  # OUT/best/: the checkpoint of the best evaluation so far
BEST_FILE = "best.json"  # in OUT/best/: its step, scores and evaluation seeds


@dataclass
class TrainingEvaluation:
    """K seeded episodes (episode i on seed + i, the same every time) of the checkpoint the trainer writes."""

    env_id: str
    episodes: int
    seed: int
    max_steps: int | None
    device: torch.device
    best: float | None = None  # the best eval_score (or eval_return without reference scores) so far

    def run(self, write_files: Callable[[Path, dict[str, Any]], None], summary: dict[str, Any], out: Path) -> dict:
        """Score the weights `write_files` saves (every random stream left as it was); kept in out/best/ if best."""
        from seqrl.planners.registry import load_agent  # registry imports the methods, which import training

        cuda = [self.device] if self.device.type == "cuda" else []
        numpy_state = np.random.get_state()
        with tempfile.TemporaryDirectory(prefix="seqrl-eval-") as candidate, torch.random.fork_rng(devices=cuda):
            write_files(Path(candidate), summary)
            with closing(make_vector_env(self.env_id, self.episodes)) as envs, torch.no_grad():
                agent = load_agent(candidate, envs, device=str(self.device))  # its own copy, in eval mode
                results = evaluate(agent, envs, self.episodes, self.seed, self.max_steps)
        np.random.set_state(numpy_state)
        scores = [result.normalized_score for result in results]
        record = {
            "eval_score": float(np.mean(scores)) if None not in scores else None,
            "eval_return": float(np.mean([result.episode_return for result in results])),
            "eval_scores": scores if None not in scores else [result.episode_return for result in results],
            "eval_seed_range": [self.seed, self.seed + self.episodes - 1],
        }
        value = record["eval_score"] if record["eval_score"] is not None else record["eval_return"]
        if self.best is None or value > self.best:
            self.best = value
            with atomic_directory(out / BEST_DIR) as staging:
                write_files(staging, summary)
                (staging / BEST_FILE).write_text(json.dumps({"step": summary["step"], **record}, indent=2) + "\n")
        return record


def training_evaluation(
    args: RunArgs, dataset: OfflineDataset, out: Path, device: torch.device
) -> TrainingEvaluation | None:
    """The run's evaluation (None without --eval-episodes), checked against the data; best so far from out/best/."""
    if args.eval_episodes == 0:
        return None
    if dataset.env_id is None:
        raise SeqrlError(
            f"--eval-episodes needs the env of the data, and {args.dataset} names none (a D4RL or DT file); "
            "train on a Minari dataset or drop --eval-episodes"
        )
    with closing(make_env(dataset.env_id)) as env:
        env_dims = (env.observation_space.shape[0], env.action_space.shape[0])
    if env_dims != (dataset.obs_dim, dataset.act_dim):
        raise SeqrlError(
            f"{dataset.env_id} has observation and action sizes {env_dims} but {args.dataset} has "
            f"{(dataset.obs_dim, dataset.act_dim)}; drop --eval-episodes"
        )
    best = None
    best_file = out / BEST_DIR / BEST_FILE
    if args.resume and best_file.is_file():
        kept = json.loads(best_file.read_text())
        best = kept["eval_score"] if kept["eval_score"] is not None else kept["eval_return"]
    return TrainingEvaluation(dataset.env_id, args.eval_episodes, args.eval_seed, args.eval_max_steps, device, best)
