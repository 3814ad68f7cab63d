"""`seqrl train dt`: fit a Decision Transformer to an offline dataset with the paper's gym recipe."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from seqrl import SeqrlError, __version__
from seqrl.planners.checkpoint import META_FILE, write_json
from seqrl.planners.decision.config import DecisionTransformerConfig
from seqrl.planners.decision.data import EpisodeSteps, Window, episode_steps, sample_windows
from seqrl.planners.decision.model import DecisionTransformerModel
from seqrl.planners.decision.policy import paper_target_return
from seqrl.planners.training import (
    RESUMABLE as RUN_RESUMABLE,
    RunArgs,
    Trainer,
    start_run,
    training_results,
    split_episodes,
    warmup_cosine,
)

HELD_OUT_WINDOWS = 1024  # held-out windows scored at every evaluation
# Options that may change when resuming: the run's length and where or how it runs; everything else must match.
RESUMABLE = RUN_RESUMABLE | {"steps"}


@dataclass(kw_only=True)
class TrainArgs(RunArgs):
    """Every option of `seqrl train dt`, with the paper's gym recipe as defaults."""

    steps: int = 100_000  # the original: 10 iterations of 10k steps
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 10_000
    decay_steps: int | None = None  # None: flat after warmup (the original); N: cosine down to zero at update N
    grad_clip: float = 0.25
    context_length: int = 20
    hidden_size: int = 128
    n_layer: int = 3
    n_head: int = 1
    activation_function: str = "relu"
    dropout: float = 0.1
    max_ep_len: int = 1000
    return_scale: float = 1000.0
    target_return: float | None = None  # default for rollouts: the paper's for the env family, else the best episode's


def train_dt(args: TrainArgs) -> dict[str, Any]:
    """Train (or resume) a Decision Transformer into `args.out`; the final metrics record."""
    check_args(args)
    out, device, dataset = start_run(args, "dt", RESUMABLE)
    state_mean, state_std = dataset.observation_mean, dataset.observation_std
    train_ids, held_ids = split_episodes(len(dataset.episodes), args.holdout, args.seed)

    def steps_of(ids: np.ndarray) -> EpisodeSteps:
        episodes = [dataset.episodes[i] for i in ids]
        return episode_steps(episodes, state_mean, state_std, args.return_scale, args.max_ep_len)

    train, held = steps_of(train_ids), steps_of(held_ids) if len(held_ids) else None

    config = DecisionTransformerConfig(
        state_dim=dataset.obs_dim,
        act_dim=dataset.act_dim,
        hidden_size=args.hidden_size,
        max_ep_len=args.max_ep_len,
        n_layer=args.n_layer,
        n_head=args.n_head,
        activation_function=args.activation_function,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
    )
    model = DecisionTransformerModel(config).to(device)
    # The original decays every parameter (plain AdamW), unlike GPT recipes that spare biases and norms.
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, args.warmup_steps)
    if args.decay_steps is None:
        scheduler = warmup_cosine(optimizer, warmup, args.steps, min_ratio=1.0)  # warmup, then flat
    else:
        scheduler = warmup_cosine(optimizer, warmup, args.decay_steps, min_ratio=0.0)
    target_return = args.target_return
    if target_return is None:
        target_return = paper_target_return(dataset.env_id) or float(dataset.returns.max())
    meta = {
        "kind": "dt",
        "seqrl_version": __version__,
        "env_id": dataset.env_id,
        "datasets": dataset.sources,
        "state_mean": state_mean.tolist(),
        "state_std": state_std.tolist(),
        "policy": {"target_return": target_return, "return_scale": args.return_scale, "context_length": args.context_length},
        "training": dataclasses.asdict(args),
    }

    def write_files(directory: Path, summary: dict[str, Any]) -> None:
        model.save_pretrained(directory)
        write_json(directory / META_FILE, {**meta, **training_results(summary, device)})

    trainer = Trainer(
        model,
        optimizer,
        scheduler,
        out,
        loss_of=action_loss,
        tokens_in=lambda batch: 3 * int(batch[4].sum()),  # (return, state, action) tokens of real steps
        write_files=write_files,
        grad_clip=args.grad_clip,
        eval_every=args.eval_every,
        save_every=args.save_every,
        quiet=args.quiet,
    )
    if args.resume:
        trainer.resume()
    parameters = sum(p.numel() for p in model.parameters())
    Console(quiet=args.quiet).print(
        f"{int(train.lengths.sum()):,} training steps in {len(train_ids)} episodes ({len(held_ids)} held out), "
        f"state_dim {config.state_dim}, act_dim {config.act_dim}, {parameters:,} parameters; "
        f"steps {trainer.step:,} -> {args.steps:,} of batch {args.batch_size} on {device}",
        highlight=False,
    )

    def batch_at(step: int) -> Window:
        rng = np.random.default_rng([args.seed, 1, step])  # a step alone fixes its batch, so resuming replays nothing
        return tuple(t.to(device) for t in sample_windows(train, args.batch_size, args.context_length, rng))

    summary = trainer.run(batch_at, held_out_batches(held, args, device), args.steps)
    Console(quiet=args.quiet).print(f"saved {out} at step {summary['step']:,}: train loss {summary['train_loss']:.4f}", highlight=False)
    return summary


def action_loss(model: DecisionTransformerModel, batch: Window) -> torch.Tensor:
    """Mean squared error of the predicted actions at the real (unpadded) steps of a batch of windows."""
    states, actions, returns_to_go, timesteps, mask = batch
    predicted = model(states, actions, None, returns_to_go, timesteps, mask).action_preds  # (B, K, act_dim)
    real = mask.bool()
    return F.mse_loss(predicted[real], actions[real])


def held_out_batches(held: EpisodeSteps | None, args: TrainArgs, device: torch.device) -> list[Window]:
    """A fixed sample of HELD_OUT_WINDOWS windows from the held-out episodes, in batches on `device`."""
    if held is None:
        return []
    windows = sample_windows(held, HELD_OUT_WINDOWS, args.context_length, np.random.default_rng([args.seed, 0]))
    return [tuple(t.to(device) for t in part) for part in zip(*(t.split(args.batch_size) for t in windows))]


def check_args(args: TrainArgs) -> None:
    """One-line errors for option values that cannot work."""
    positive = ("steps", "batch_size", "context_length", "hidden_size", "n_layer", "n_head", "max_ep_len", "eval_every", "save_every")
    for name in positive:
        if getattr(args, name) < 1:
            raise SeqrlError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.hidden_size % args.n_head:
        raise SeqrlError(f"--hidden-size {args.hidden_size} must be divisible by --n-head {args.n_head}")
    if 3 * args.context_length > DecisionTransformerConfig.n_positions:
        raise SeqrlError(f"--context-length {args.context_length} is over {DecisionTransformerConfig.n_positions // 3}, the trunk's limit")
    if args.return_scale <= 0:
        raise SeqrlError(f"--return-scale must be positive, got {args.return_scale}")
    if args.decay_steps is not None and args.decay_steps <= args.warmup_steps:
        raise SeqrlError(f"--decay-steps {args.decay_steps} must come after --warmup-steps {args.warmup_steps}")
