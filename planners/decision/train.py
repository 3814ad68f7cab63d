"""`seqrl train dt`: fit a Decision Transformer to an offline dataset with the paper's gym recipe."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from seqrl.envs.families import dt_target_return
from seqrl.planners.decision.config import DecisionTransformerConfig
from seqrl.planners.decision.data import EpisodeSteps, Window, episode_steps, sample_windows
from seqrl.planners.decision.model import DecisionTransformerModel
from seqrl.planners.decision.options import DecisionMeta, PolicySettings, TrainArgs
from seqrl.planners.parallel import launch, needs_launch
from seqrl.planners.train_eval import training_evaluation
from seqrl.planners.training import (
    Trainer,
    holding_out,
    split_episodes,
    start_run,
    training_results,
    warmup_cosine,
    warn_short_run,
)

HELD_OUT_WINDOWS = 1024  # held-out windows scored at every evaluation


@holding_out
def train_dt(args: TrainArgs) -> dict[str, Any] | None:
    """Train (or resume) a Decision Transformer into `args.out`; the final metrics record."""
    if needs_launch(args.nproc):
        return launch(train_dt, args, args.nproc)
    args, out, device, dataset = start_run(args, "dt", DecisionMeta)
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
    warn_short_run(warmup, args.steps, "--warmup-steps")
    target_return = args.target_return
    if target_return is None:
        target_return = dt_target_return(dataset.env_id) or float(dataset.returns.max())
    policy = PolicySettings(
        target_return=target_return, return_scale=args.return_scale, context_length=args.context_length
    )
    meta = DecisionMeta(
        kind="dt",
        env_id=dataset.env_id,
        datasets=dataset.sources,
        state_mean=state_mean.tolist(),
        state_std=state_std.tolist(),
        policy=policy.to_dict(),
        training=args.to_dict(),
    )

    def write_files(directory: Path, summary: dict[str, Any]) -> None:
        model.save_pretrained(directory)
        dataclasses.replace(meta, **training_results(summary, device)).write(directory)

    trainer = Trainer(
        model,
        optimizer,
        scheduler,
        out,
        loss_of=action_loss,
        tokens_in=lambda batch: 3 * int(batch[4].sum()),  # (return, state, action) tokens of real steps
        write_files=write_files,
        grad_clip=args.grad_clip,
        options=args,
        evaluation=training_evaluation(args, dataset, out, device),
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
    Console(quiet=args.quiet).print(
        f"saved {out} at step {summary['step']:,}: train loss {summary['train_loss']:.4f}", highlight=False
    )
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
