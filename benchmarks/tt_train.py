"""Training tokens/s on CPU: seqrl's TrajectoryTransformerModel vs transformers 4.30's (target: >= 1.3x at fp32).

Hopper-sized model (observation 11, action 3, transition 16, block 159, 100 bins; 4 layers, 4 heads,
width 128), batch 64, dropout 0.1 on embeddings, residuals and attention weights. Every model starts
from the same weights and takes the same batch through the same training step (weighted loss,
backward, grad-norm clip 1.0, AdamW as `seqrl train tt` builds it). The fp32 models' eval-mode losses
are checked equal first. Rows:
  fp32       both models in fp32: the target row.
  bf16       under torch.autocast(cpu, bfloat16), as `seqrl train tt --precision bf16` runs; seqrl's
             row is compared with transformers in fp32 and with transformers under the same autocast.
Timed steps are interleaved in rounds so that load from other processes hits every model alike; the
table shows medians of wall time and of process CPU time (the steadier figure on a shared machine:
with one thread it is the work done), and the load average around the run. When other processes keep
the cores busy, use --threads 1 (or OMP_WAIT_POLICY=PASSIVE): OpenMP threads spin while they wait for a
preempted sibling, which multiplies both models' times, the one with more (smaller) operators most.
Run: python benchmarks/tt_train.py [--threads 1] [--rounds 6] [--fp32-only]

--nproc-dataset ID instead times whole `seqrl train tt` runs on that dataset (default model, --batch-size
global batch, --holdout 0) with --nproc 1 and --nproc 2, one thread per process, alternating in rounds;
each run's tokens/s is its metrics' tokens over its training seconds (startup left out); medians shown.
Run: python benchmarks/tt_train.py --nproc-dataset zoo/hopper/medium-v0 --rounds 3
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from seqrl import TrajectoryTransformerConfig, TrajectoryTransformerModel
from seqrl.planners.training import adamw

OBSERVATION_DIM, ACTION_DIM, N_BINS, TRANSITIONS = 11, 3, 100, 10
SEQRL, TRANSFORMERS = "seqrl", "transformers 4.30"


def hf_model(config: TrajectoryTransformerConfig, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """transformers' TrajectoryTransformerModel with the same config and weights."""
    import transformers

    hf_config = transformers.TrajectoryTransformerConfig(
        **{k: v for k, v in config.to_dict().items() if k != "architectures"}
    )
    model = transformers.TrajectoryTransformerModel(hf_config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(key.endswith("attn.mask") for key in missing), (missing, unexpected)
    return model


def training_step(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], precision: str) -> Callable[[], float]:
    """A closure running one full training step of `model` on `batch` in `precision`; returns the loss."""
    optimizer = adamw(model, 6e-4, 0.1, (0.9, 0.95))
    x, y, mask = batch

    def step() -> float:
        model.train()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with autocast:
            loss = model(x, targets=y, attention_mask=mask, return_dict=True).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return step


def main() -> None:
    """Check parity, time every model's training steps in interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.1, help="embd/resid/attn dropout (the recipe's 0.1)")
    parser.add_argument("--fp32-only", action="store_true", help="leave out the bf16 autocast rows")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--profile", action="store_true", help="also print each model's top operators for one step")
    parser.add_argument("--nproc-dataset", help="time seqrl train tt on this dataset with --nproc 1 and 2 instead")
    parser.add_argument("--nproc-steps", type=int, default=60, help="updates per seqrl train tt run")
    args = parser.parse_args()
    if args.nproc_dataset:
        return compare_processes(args.nproc_dataset, args.batch_size, args.nproc_steps, args.rounds)
    if args.threads:
        torch.set_num_threads(args.threads)

    transition_dim = OBSERVATION_DIM + ACTION_DIM + 2
    config = TrajectoryTransformerConfig(
        vocab_size=N_BINS,
        observation_dim=OBSERVATION_DIM,
        action_dim=ACTION_DIM,
        transition_dim=transition_dim,
        block_size=TRANSITIONS * transition_dim - 1,
        embd_pdrop=args.dropout,
        resid_pdrop=args.dropout,
        attn_pdrop=args.dropout,
    )
    torch.manual_seed(0)
    state = TrajectoryTransformerModel(config).state_dict()
    # windows as `seqrl train tt` makes them: tokens in [0, N_BINS] (N_BINS = stop), inputs and shifted targets
    tokens = torch.randint(0, N_BINS + 1, (args.batch_size, config.block_size + 1))
    batch = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), torch.ones(args.batch_size, config.block_size))

    rows = [(SEQRL, "fp32"), (TRANSFORMERS, "fp32")] + (
        [] if args.fp32_only else [(SEQRL, "bf16"), (TRANSFORMERS, "bf16")]
    )
    models = {}
    for name, precision in rows:  # every row's model starts from the same weights
        models[name, precision] = (
            hf_model(config, state) if name == TRANSFORMERS else TrajectoryTransformerModel(config)
        )
        if name == SEQRL:
            models[name, precision].load_state_dict(state)
    with torch.no_grad():
        x, y, mask = batch
        losses = [
            models[name, "fp32"].eval()(x, targets=y, attention_mask=mask, return_dict=True).loss
            for name in (SEQRL, TRANSFORMERS)
        ]
    assert torch.allclose(*losses, atol=1e-5), f"models disagree before timing: {losses}"

    steps = {key: training_step(model, batch, key[1]) for key, model in models.items()}
    wall: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    cpu: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for step in steps.values():  # warm-up: allocator, thread pools, optimizer state
        step()
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for key, step in steps.items():
            for _ in range(args.steps):
                start, start_cpu = time.perf_counter(), time.process_time()
                step()
                wall[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
    load_after = os.getloadavg()[0]

    def medians(key: tuple[str, str]) -> tuple[float, float]:
        return statistics.median(wall[key]), statistics.median(cpu[key])

    def speedup(key: tuple[str, str], reference: tuple[str, str]) -> str:
        (wall_time, cpu_time), (reference_wall, reference_cpu) = medians(key), medians(reference)
        return f"{reference_wall / wall_time:.2f}x / {reference_cpu / cpu_time:.2f}x"

    tokens_per_step = batch[0].numel()
    table = Table(
        title=f"TT training step on CPU ({torch.get_num_threads()} threads): "
        f"batch {args.batch_size} x {config.block_size} "
        f"tokens, dropout {args.dropout}; medians of {args.rounds * args.steps} steps each; "
        f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs"
    )
    columns = (
        "model",
        "precision",
        "ms/step",
        "CPU ms/step",
        "tokens/s",
        "vs transformers fp32 (wall / CPU)",
        "vs transformers same precision (wall / CPU)",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "precision") else "right")
    for name, precision in steps:
        wall_time, cpu_time = medians((name, precision))
        table.add_row(
            name,
            "fp32" if precision == "fp32" else "bf16 autocast",
            f"{1e3 * wall_time:.0f}",
            f"{1e3 * cpu_time:.0f}",
            f"{tokens_per_step / wall_time:,.0f}",
            speedup((name, precision), (TRANSFORMERS, "fp32")),
            speedup((name, precision), (TRANSFORMERS, precision)),
        )
    Console(width=160).print(table)
    if args.profile:
        for (name, precision), step in steps.items():
            with torch.profiler.profile() as profiler:
                step()
            Console().print(f"[bold]{name} {precision}[/]: one step, top operators by own CPU time")
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def compare_processes(dataset: str, batch_size: int, steps: int, rounds: int) -> None:
    """Median tokens/s of `seqrl train tt` with one process and with two (one thread each), alternating in rounds."""
    seqrl = Path(sys.executable).parent / "seqrl"
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(rounds):
            for nproc in (1, 2):
                out = Path(scratch) / f"run-{round_index}-{nproc}"
                command = [
                    seqrl,
                    "train",
                    "tt",
                    "--dataset",
                    dataset,
                    "--out",
                    out,
                    "--steps",
                    steps,
                    "--batch-size",
                    batch_size,
                    "--holdout",
                    0,
                    "--eval-every",
                    steps,
                    "--nproc",
                    nproc,
                    "--threads",
                    1,
                    "--device",
                    "cpu",
                    "--quiet",
                ]
                subprocess.run(list(map(str, command)), check=True)
                record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
                rates[nproc].append(record["tokens"] / record["elapsed"])
                Console().print(f"round {round_index}: --nproc {nproc} {rates[nproc][-1]:,.0f} tok/s", highlight=False)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    Console().print(
        f"median tokens/s: 1 process {one:,.0f}, 2 processes {two:,.0f}: {two / one:.2f}x "
        f"(batch {batch_size}, {steps} steps, {rounds} rounds, load {os.getloadavg()[0]:.1f})",
        highlight=False,
    )


if __name__ == "__main__":
    main()
