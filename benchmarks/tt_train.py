"""Training tokens/s on CPU: seqrl's TrajectoryTransformerModel vs transformers 4.30's, same steps (target: >= 1.3x).

Hopper-sized model (observation 11, action 3, transition 16, block 159, 100 bins; 4 layers, 4 heads,
width 128), batch 64. Both models start from the same weights and take the same batches through the
same training step (weighted loss, backward, grad-norm clip 1.0, AdamW as `seqrl train tt` builds it).
Their eval-mode losses on one batch are checked equal first. Timed steps are interleaved in rounds so
that load from other processes hits both alike; the table shows medians of wall time and of process
CPU time (the steadier figure on a shared machine; with one thread it is the work done).
Run: python benchmarks/tt_train.py [--threads N] [--dropout 0.1]
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from seqrl import TrajectoryTransformerConfig, TrajectoryTransformerModel
from seqrl.planners.training import adamw

OBSERVATION_DIM, ACTION_DIM, N_BINS, TRANSITIONS = 11, 3, 100, 10


def hf_model(config: TrajectoryTransformerConfig, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """transformers' TrajectoryTransformerModel with the same config and weights."""
    import transformers

    hf_config = transformers.TrajectoryTransformerConfig(**{k: v for k, v in config.to_dict().items() if k != "architectures"})
    model = transformers.TrajectoryTransformerModel(hf_config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(key.endswith("attn.mask") for key in missing), (missing, unexpected)
    return model


def training_step(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> Callable[[], float]:
    """A closure running one full training step of `model` on `batch`; returns the loss."""
    optimizer = adamw(model, 6e-4, 0.1, (0.9, 0.95))
    x, y, mask = batch

    def step() -> float:
        model.train()
        loss = model(x, targets=y, attention_mask=mask, return_dict=True).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return step


def main() -> None:
    """Check parity, time both models' training steps in interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.1, help="embd/resid/attn dropout (the recipe's 0.1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model per round")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--profile", action="store_true", help="also print each model's top operators for one step")
    args = parser.parse_args()
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
    ours = TrajectoryTransformerModel(config)
    theirs = hf_model(config, ours.state_dict())
    # windows as `seqrl train tt` makes them: tokens in [0, N_BINS] (N_BINS = stop), inputs and shifted targets
    tokens = torch.randint(0, N_BINS + 1, (args.batch_size, config.block_size + 1))
    batch = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), torch.ones(args.batch_size, config.block_size))

    with torch.no_grad():
        losses = [m.eval()(batch[0], targets=batch[1], attention_mask=batch[2], return_dict=True).loss for m in (ours, theirs)]
    assert torch.allclose(*losses, atol=1e-5), f"models disagree before timing: {losses}"

    models = {"seqrl": training_step(ours, batch), "transformers 4.30": training_step(theirs, batch)}
    wall: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    for step in models.values():  # warm-up: allocator, thread pools, optimizer state
        step()
    for _ in range(args.rounds):
        for name, step in models.items():
            for _ in range(args.steps):
                start, start_cpu = time.perf_counter(), time.process_time()
                step()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)

    tokens_per_step = batch[0].numel()
    reference, reference_cpu = statistics.median(wall["transformers 4.30"]), statistics.median(cpu["transformers 4.30"])
    table = Table(title=f"TT training step on CPU ({torch.get_num_threads()} threads): batch {args.batch_size} x "
                  f"{config.block_size} tokens, dropout {args.dropout}, {len(wall['seqrl'])} steps each")
    for column in ("model", "ms/step", "min ms/step", "CPU ms/step", "tokens/s", "speedup", "speedup (CPU time)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in models:
        median, median_cpu = statistics.median(wall[name]), statistics.median(cpu[name])
        table.add_row(
            name, f"{1e3 * median:.0f}", f"{1e3 * min(wall[name]):.0f}", f"{1e3 * median_cpu:.0f}",
            f"{tokens_per_step / median:,.0f}", f"{reference / median:.2f}x", f"{reference_cpu / median_cpu:.2f}x",
        )
    Console(width=120).print(table)
    if args.profile:
        for name, step in models.items():
            with torch.profiler.profile() as profiler:
                step()
            Console().print(f"[bold]{name}[/]: one step, top operators by own CPU time")
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
