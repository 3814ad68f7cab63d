"""`seqrl train tt`: fit a Trajectory Transformer to an offline dataset with the original recipe."""

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from seqrl.envs.datasets import OfflineDataset
from seqrl.planners.parallel import launch, leave_group, needs_launch
from seqrl.planners.train_eval import training_evaluation
from seqrl.planners.training import (
    EpochSampler,
    Trainer,
    adamw,
    holding_out,
    split_episodes,
    start_run,
    training_results,
    warmup_cosine,
    warn_short_run,
)
from seqrl.planners.trajectory.config import TrajectoryTransformerConfig
from seqrl.planners.trajectory.data import TokenWindows, episode_transitions, token_windows
from seqrl.planners.trajectory.discretizer import DISCRETIZER_FILE, Discretizer
from seqrl.planners.trajectory.model import TrajectoryTransformerModel
from seqrl.planners.trajectory.options import TrainArgs, TrajectoryMeta

HELD_OUT_WINDOWS = 4096  # held-out windows scored at every evaluation
REFERENCE_SAMPLES = 50 * 1_000_000  # the original trains for 50 epochs of a 1M-step dataset, whatever its size


@holding_out
def train_tt(args: TrainArgs) -> dict[str, Any] | None:
    """Train (or resume) a Trajectory Transformer into `args.out`; the final metrics record."""
    if needs_launch(args.nproc):
        return launch(train_tt, args, args.nproc)
    args, out, device, dataset = start_run(args, "tt", TrajectoryMeta)
    transitions = [episode_transitions(e, args.discount, args.termination_penalty) for e in dataset.episodes]
    if args.resume:
        discretizer = Discretizer.load(out / DISCRETIZER_FILE)
    else:
        discretizer = Discretizer.fit(np.concatenate(transitions), args.n_bins, args.discretizer)
    train_ids, held_ids = split_episodes(len(transitions), args.holdout, args.seed)
    train = token_windows([transitions[i] for i in train_ids], discretizer, args.sequence_length, args.max_path_length)
    held = None  # with --holdout 0 there is no held-out loss
    if len(held_ids):
        held = token_windows(
            [transitions[i] for i in held_ids], discretizer, args.sequence_length, args.max_path_length
        )

    config = model_config(args, dataset.obs_dim, dataset.act_dim)
    model = TrajectoryTransformerModel(config).to(device)
    sampler = EpochSampler(len(train), args.batch_size, args.seed)
    steps = total_steps(args, len(train), sampler.steps_per_epoch)
    optimizer = adamw(model, args.lr, args.weight_decay, (args.beta1, args.beta2))
    # the original counts tokens (warmup: one epoch's worth, cosine to 10% at twenty); the same in steps here
    warmup = max(1, round(args.warmup_epochs * sampler.steps_per_epoch))
    scheduler = warmup_cosine(optimizer, warmup, round(args.decay_epochs * sampler.steps_per_epoch), args.min_lr_ratio)
    warn_short_run(warmup, steps, "--warmup-epochs")
    meta = checkpoint_meta(args, dataset, discretizer)

    def write_files(directory: Path, summary: dict[str, Any]) -> None:
        model.save_pretrained(directory)
        discretizer.save(directory / DISCRETIZER_FILE)
        dataclasses.replace(meta, **training_results(summary, device)).write(directory)

    trainer = Trainer(
        model,
        optimizer,
        scheduler,
        out,
        loss_of=functools.partial(window_loss, precision=args.precision),
        tokens_in=lambda batch: batch[0].numel(),
        write_files=write_files,
        grad_clip=args.grad_clip,
        options=args,
        evaluation=training_evaluation(args, dataset, out, device),
    )
    if args.resume:
        trainer.resume()
    console = Console(quiet=args.quiet, soft_wrap=True)
    if trainer.step >= steps:
        console.print(
            f"{out} is already at step {trainer.step:,}; pass a --steps above it to train on", highlight=False
        )
        leave_group()
        return trainer.summary
    parameters = sum(p.numel() for p in model.parameters())
    console.print(
        f"{len(train):,} training windows from {len(train_ids)} episodes ({len(held_ids)} held out), "
        f"transition_dim {config.transition_dim}, block_size {config.block_size}, {parameters:,} parameters; "
        f"steps {trainer.step:,} -> {steps:,} of batch {args.batch_size} on {device}",
        highlight=False,
    )

    def batch_at(step: int) -> tuple[torch.Tensor, ...]:
        return tuple(tensor.to(device) for tensor in train[sampler.indices(step)])

    summary = trainer.run(batch_at, held_out_batches(held, args.batch_size, args.seed, device), steps)
    console.print(f"saved {out} at step {summary['step']:,}: train loss {summary['train_loss']:.4f}", highlight=False)
    return summary


def model_config(args: TrainArgs, observation_dim: int, action_dim: int) -> TrajectoryTransformerConfig:
    """The model's config: dimensions from the data, a block of `sequence_length` transitions minus one token."""
    transition_dim = observation_dim + action_dim + 2
    return TrajectoryTransformerConfig(
        vocab_size=args.n_bins,
        block_size=args.sequence_length * transition_dim - 1,
        observation_dim=observation_dim,
        action_dim=action_dim,
        transition_dim=transition_dim,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
        embd_pdrop=args.embd_pdrop,
        attn_pdrop=args.attn_pdrop,
        resid_pdrop=args.resid_pdrop,
        action_weight=args.action_weight,
        reward_weight=args.reward_weight,
        value_weight=args.value_weight,
        learning_rate=args.lr,
    )


def checkpoint_meta(args: TrainArgs, dataset: OfflineDataset, discretizer: Discretizer) -> TrajectoryMeta:
    """seqrl.json without the results: where the data came from and how it was tokenized and trained."""
    return TrajectoryMeta(
        kind="tt",
        env_id=dataset.env_id,
        datasets=dataset.sources,
        discount=args.discount,
        termination_penalty=args.termination_penalty,
        sequence_length=args.sequence_length,
        max_path_length=args.max_path_length,
        discretizer=discretizer.kind,
        n_bins=discretizer.n_bins,
        training=args.to_dict(),
    )


def window_loss(
    model: TrajectoryTransformerModel, batch: tuple[torch.Tensor, ...], precision: str = "fp32"
) -> torch.Tensor:
    """The model's weighted cross-entropy on a batch (x, y, mask) of token windows, in fp32 or under bf16 autocast."""
    x, y, mask = batch
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return model(x, targets=y, attention_mask=mask, use_cache=False).loss


def held_out_batches(
    windows: TokenWindows | None, batch_size: int, seed: int, device: torch.device
) -> list[tuple[torch.Tensor, ...]]:
    """A fixed sample of at most HELD_OUT_WINDOWS held-out windows, in batches on `device`."""
    if windows is None:
        return []
    chosen = torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(len(windows))[:HELD_OUT_WINDOWS]))
    return [tuple(t.to(device) for t in windows[part]) for part in chosen.split(batch_size)]


def total_steps(args: TrainArgs, windows: int, steps_per_epoch: int) -> int:
    """Updates to run: --steps, else --epochs, else the original's fixed budget of 50M sampled windows."""
    if args.steps is not None:
        return args.steps
    epochs = args.epochs if args.epochs is not None else max(1, int(REFERENCE_SAMPLES / windows))
    return math.ceil(epochs * steps_per_epoch)
