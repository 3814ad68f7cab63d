"""Training pieces shared by the TT and DT trainers: AdamW groups, warmup + cosine, batches, metrics, checkpoints."""

import contextlib
import dataclasses
import fcntl
import functools
import json
import math
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors import SafetensorError
from seqrl import SeqrlError
from seqrl.agents.options import spec_of
from seqrl.envs.datasets import OfflineDataset, load_dataset
from seqrl.planners.checkpoint import PretrainedModel, atomic_directory
from seqrl.planners.device import resolve_device, set_threads
from seqrl.planners.metadata import META_FILE, CheckpointMeta, read_json
from seqrl.planners.parallel import Ranks, barrier, join_group, leave_group, needs_launch, ranks
from seqrl.planners.train_board import open_board, write_scalars
from seqrl.planners.train_eval import BEST_DIR, TrainingEvaluation
from seqrl.planners.train_options import RunArgs
from torch import nn

TRAINING_STATE_FILE = "training_state.pt"
METRICS_FILE = "metrics.jsonl"
HISTORY_DIR = "checkpoints"  # --keep-checkpoints: every save also as HISTORY_DIR/step-N
ETA_WARNING_HOURS = 24  # a run planned to take longer than this on its device gets a warning
Batch = Sequence[torch.Tensor]
RunArgsT = TypeVar("RunArgsT", bound=RunArgs)


def training_results(summary: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The seqrl.json entries that a training run's latest metrics record gives."""
    return {
        "final_loss": summary.get("train_loss"),
        "held_out_loss": summary.get("held_out_loss"),
        "steps": summary.get("step"),
        "tokens": summary.get("tokens"),
        "train_time_s": summary.get("elapsed"),
        "device": str(device),
    }


def adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW decaying only weight matrices: no decay on biases, LayerNorm, embeddings or free parameters."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            matrix = name == "weight" and param.ndim >= 2 and not isinstance(module, (nn.Embedding, nn.LayerNorm))
            (decay if matrix else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, decay_steps: int, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate ramped linearly over `warmup_steps`, then cosine to `min_ratio` at `decay_steps`, then flat."""

    def multiplier(step: int) -> float:
        updates = step + 1  # the update about to happen counts, so the first one is not at lr 0
        if updates < warmup_steps:
            return updates / warmup_steps
        # the original (minGPT's token-counting schedule) lets the cosine climb again past its end; hold the floor
        progress = min(1.0, (updates - warmup_steps) / max(1, decay_steps - warmup_steps))
        return max(min_ratio, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


class EpochSampler:
    """Batch indices by step: each epoch is a fresh permutation seeded by (seed, epoch), so a step alone resumes it."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        if size < 1:
            raise SeqrlError("no training samples: the dataset's episodes are too short; use a larger dataset")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.steps_per_epoch = math.ceil(size / batch_size)  # the last batch of an epoch may be smaller
        self.epoch, self.order = -1, torch.empty(0, dtype=torch.int64)

    def indices(self, step: int) -> torch.Tensor:
        """Indices of the batch used at `step` (0-based)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.order = torch.from_numpy(np.random.default_rng([self.seed, epoch]).permutation(self.size))
        return self.order[position * self.batch_size : (position + 1) * self.batch_size]


def split_episodes(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out episodes; `fraction` of them (at least one, if any) held out, never all."""
    if not 0 <= fraction < 1:
        raise SeqrlError(f"held-out fraction must be in [0, 1), got {fraction}")
    held = min(count - 1, math.ceil(fraction * count)) if fraction > 0 else 0
    order = np.random.default_rng([seed, count]).permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])


def start_run(
    args: RunArgs, kind: str, meta_class: type[CheckpointMeta]
) -> tuple[RunArgs, Path, torch.device, OfflineDataset]:
    """Check a new or resumed run, join its process group, set threads and seed; this rank's args, out, device, data."""
    out = Path(args.out)
    if args.datasets_root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(args.datasets_root)
    place = ranks()
    if args.resume:
        check_resumable(out, args, kind, meta_class)
    device = join_group(resolve_device(args.device))
    threads = args.threads
    if threads is None and place.world > 1 and device.type == "cpu":
        threads = max(1, (os.cpu_count() or 1) // place.local_world)  # the cores shared out, not oversubscribed
    set_threads(threads)
    torch.manual_seed(args.seed)
    if args.download and place.rank > 0:
        barrier()  # rank 0 downloads what is missing; the others read it once it is there
    dataset = load_dataset(args.dataset, download=args.download and place.rank == 0)
    if args.download and place.rank == 0:
        barrier()
    if not args.resume and place.rank == 0:
        fresh_output_directory(out)
    barrier()  # the other ranks read `out` only once rank 0 has made it
    if place.rank > 0:
        args = dataclasses.replace(args, quiet=True)  # one rank reports
    return args, out, device, dataset


def warn(message: str) -> None:
    """Print a one-line warning on stderr (from rank 0 only), even with --quiet."""
    quiet = ranks().rank > 0
    Console(stderr=True, soft_wrap=True, quiet=quiet).print(f"[bold yellow]warning:[/] {message}", highlight=False)


def warn_short_run(warmup_steps: int, steps: int, flag: str) -> None:
    """Warn when the warmup outlasts the run, so the learning rate never reaches its peak."""
    if warmup_steps > steps:
        warn(
            f"the warmup ({warmup_steps:,} steps) is longer than the run ({steps:,} steps), so the lr never reaches "
            f"--lr; lower {flag}"
        )


def holding_out(train: Callable[[RunArgsT], Any]) -> Callable[[RunArgsT], Any]:
    """`train(args)` run with `args.out` locked by its rank 0, so that no second run trains into it meanwhile."""

    @functools.wraps(train)
    def locked(args: RunArgsT) -> Any:
        if needs_launch(args.nproc) or ranks().rank > 0:  # the launcher's rank 0 takes the lock
            return train(args)
        with run_lock(Path(args.out)):
            return train(args)

    return locked


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold an flock on a file beside `out` (which every save replaces), or refuse while another run holds it.

    The kernel drops an flock when its process ends however it ends, so a killed run leaves no stale lock.
    """
    where = out.resolve()  # one lock whatever the spelling: relative, with "..", through a link
    lock_path = where.parent / f".{where.name}.lock"
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "a")
    except OSError as error:
        raise SeqrlError(
            f"cannot create {lock_path} ({error.strerror}); choose a --out in a writable directory"
        ) from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SeqrlError(
                f"another `seqrl train` is writing to --out {out} (it holds {lock_path}); "
                "wait for it to finish or choose another --out"
            ) from None
        yield


def fresh_output_directory(out: Path) -> None:
    """Create `out` for a new run, refusing one that holds anything but a previous run's bare metrics."""
    if out.exists() and not out.is_dir():
        raise SeqrlError(f"--out {out} is a file; pass a directory")
    if out.is_dir() and any(path.name != METRICS_FILE for path in out.iterdir()):
        hint = "pass --resume to continue it" if (out / TRAINING_STATE_FILE).exists() else "it is not empty"
        raise SeqrlError(f"--out {out} already exists ({hint}) or choose a new --out directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text("")


def check_resumable(out: Path, args: RunArgs, kind: str, meta_class: type[CheckpointMeta]) -> None:
    """Refuse to resume a run of another kind, or one whose options (but the resumable ones) differ from the saved."""
    meta = meta_class.from_dict(read_json(out / META_FILE), str(out / META_FILE))
    if meta.kind != kind or not meta.training:
        raise SeqrlError(f"{out} is not a run of `seqrl train {kind}` (kind {meta.kind!r}); pass that run's --out")
    given = args.to_dict()
    changed = []
    for run_option in dataclasses.fields(args):
        name = run_option.name
        saved = meta.training.get(name, run_option.default)  # an option newer than the run was saved with its default
        if not spec_of(run_option).resumable and saved != given[name]:
            changed.append(f"--{name.replace('_', '-')} {given[name]} (was {saved})")
    if changed:
        raise SeqrlError(f"cannot resume {out} with changed options: {', '.join(changed)}; repeat the original options")


@dataclass
class Trainer:
    """Steps of loss, backward, clipped AdamW and lr schedule, with held-out loss in metrics.jsonl and atomic saves."""

    model: PretrainedModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    out: Path  # the checkpoint directory, replaced as a whole on every save
    loss_of: Callable[[nn.Module, Batch], torch.Tensor]  # mean loss of a batch (already on the model's device)
    tokens_in: Callable[[Batch], int]  # tokens (or samples) a batch counts for the throughput figure
    write_files: Callable[[Path, dict[str, Any]], None]  # model files + metadata into a directory, given `summary`
    grad_clip: float
    options: (
        RunArgs  # cadence (eval_every, save_every), quiet and keep_checkpoints (every save also as HISTORY_DIR/step-N)
    )
    evaluation: TrainingEvaluation | None = None  # --eval-episodes: episodes scored at every record (rank 0 runs them)
    step: int = 0  # updates done
    tokens: int = 0
    elapsed: float = 0.0  # seconds spent in `run`, over all sessions
    saved_step: int | None = None  # step of the checkpoint in `out`
    pending: list[float] = field(default_factory=list)  # train losses since the last metrics record
    summary: dict[str, Any] = field(default_factory=dict)  # the latest metrics record
    place: Ranks = field(default_factory=ranks)
    stop_signal: int | None = None  # SIGINT or SIGTERM received: stop after the current step
    board: Any = None  # --tensorboard: rank 0's SummaryWriter while `run` runs

    def __post_init__(self) -> None:
        if self.place.world > 1:
            for tensor in self.model.state_dict().values():
                dist.broadcast(tensor, 0)  # every rank starts from rank 0's weights
            torch.manual_seed(torch.initial_seed() * 1024 + self.place.rank)  # dropout differs across ranks

    def resume(self) -> None:
        """Restore weights, optimizer, scheduler, RNG, counters and metrics from the checkpoint in `out`."""
        path = self.out / TRAINING_STATE_FILE
        if not path.exists():
            raise SeqrlError(f"cannot resume: {path} is missing; start a new run with another --out")
        device = next(self.model.parameters()).device
        saved = type(self.model).from_pretrained(self.out)  # checks names and shapes against the saved config
        try:
            self.model.load_state_dict(saved.state_dict())
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as error:
            raise SeqrlError(
                f"cannot resume from {self.out}: its weights or {TRAINING_STATE_FILE} do not fit this run "
                f"({type(error).__name__}; did the dataset change?); start a new run with another --out"
            ) from None
        rank_states = state.get("rng_ranks", [state])  # runs of one process saved rank 0's state only
        if len(rank_states) == self.place.world:  # with another number of processes, ranks > 0 keep fresh seeds
            torch.set_rng_state(rank_states[self.place.rank]["rng_cpu"])
            if device.type == "cuda" and "rng_cuda" in rank_states[self.place.rank]:
                torch.cuda.set_rng_state(rank_states[self.place.rank]["rng_cuda"], device)
        self.step = self.saved_step = state["step"]
        self.tokens, self.elapsed, self.pending = state["tokens"], state["elapsed"], state["pending"]
        self.summary = json.loads(state["summary"])
        if self.place.rank == 0:
            self.trim_metrics()

    def trim_metrics(self) -> None:
        """Drop the metrics records of steps after the checkpoint, and a last line torn by a kill while appending."""
        metrics = self.out / METRICS_FILE
        lines = metrics.read_text().splitlines()
        kept = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number < len(lines) or not line.startswith('{"step": '):  # only a record cut short is torn
                    raise SeqrlError(
                        f"{metrics} line {number} is not a metrics record; restore the file or "
                        "start a new run with another --out"
                    ) from None
                warn(f"dropped the torn last line of {metrics} (the run was stopped while writing it)")
                break
            if record["step"] <= self.step:
                kept.append(line)
        metrics.write_text("".join(line + "\n" for line in kept))  # drop records of steps that were not saved

    def run(self, batch_at: Callable[[int], Batch], held_out: Sequence[Batch], steps: int) -> dict[str, Any]:
        """Train until `steps` updates are done; the last metrics record. SIGINT/SIGTERM stop at the last checkpoint."""
        columns = (
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
        )
        session_tokens, session_start = 0, time.perf_counter()
        first_step, tick = self.step, session_start
        if self.options.tensorboard is not None and self.place.rank == 0:
            self.board = open_board(self.options.tensorboard, self.step)
        previous = {number: signal.signal(number, self.on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            with Progress(*columns, disable=self.options.quiet) as progress:
                task = progress.add_task("train", total=steps, completed=self.step, status="")
                while self.step < steps:
                    lr = self.optimizer.param_groups[0]["lr"]
                    loss, tokens, stop = self.update(self.shard(batch_at(self.step)))
                    self.pending.append(loss)
                    self.step += 1
                    self.tokens += tokens
                    session_tokens += tokens
                    if stop:
                        self.stop()
                    seconds = time.perf_counter() - session_start
                    if self.step - first_step == 20:
                        self.warn_eta((steps - self.step) * seconds / 20, steps)
                    status = f"loss {loss:.4f}  {session_tokens / seconds:,.0f} tok/s"
                    if self.step % self.options.eval_every == 0 or self.step == steps:
                        self.elapsed += time.perf_counter() - tick
                        tick = time.perf_counter()
                        self.record(lr, self.evaluate(held_out) if self.place.rank == 0 else None)
                        evaluating = time.perf_counter() - tick  # neither training time nor throughput
                        tick, session_start = tick + evaluating, session_start + evaluating
                    if self.summary.get("held_out_loss") is not None:
                        status += f"  held-out {self.summary['held_out_loss']:.4f}"
                    if self.summary.get("eval_score") is not None:
                        status += f"  eval {self.summary['eval_score']:.1f}"
                    progress.update(task, completed=self.step, status=status)
                    if self.step % self.options.save_every == 0 or self.step == steps:
                        self.elapsed += time.perf_counter() - tick
                        tick = time.perf_counter()
                        self.save()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            if self.board is not None:
                self.board.close()
                self.board = None
        leave_group()  # the last save is on disk and no rank needs the others any more
        return self.summary

    def on_signal(self, signum: int, frame: Any) -> None:
        """Note SIGINT or SIGTERM: the loop stops after the step in progress (a forwarded repeat is moot)."""
        self.stop_signal = self.stop_signal or signum

    def stop(self) -> None:
        """Exit 130 (SIGINT) or 143 (SIGTERM), keeping the last checkpoint, with a message that says what is left."""
        signum = self.stop_signal or signal.SIGTERM  # another rank got it when this one did not
        if self.saved_step is None:
            kept = f"before the first checkpoint; nothing in {self.out} to resume, start the run again"
        else:
            kept = f"the checkpoint of step {self.saved_step} in {self.out} is intact (continue with --resume)"
        name = signal.Signals(signum).name
        Console(stderr=True, soft_wrap=True, quiet=self.place.rank > 0).print(
            f"{name}: stopped at step {self.step}; {kept}", highlight=False
        )
        raise SystemExit(128 + signum)

    def warn_eta(self, seconds_left: float, steps: int) -> None:
        """Warn once early when the rest of the run would take longer than ETA_WARNING_HOURS at this pace."""
        if seconds_left > ETA_WARNING_HOURS * 3600:
            device = next(self.model.parameters()).device
            warn(
                f"at this pace the {steps:,} steps take {seconds_left / 3600:,.0f} more hours on {device}; pass "
                "fewer --steps (or --epochs), more --nproc or a GPU --device"
            )

    def shard(self, batch: Batch) -> Batch:
        """This rank's share of a global batch: every world-th sample from its rank on."""
        if self.place.world == 1:
            return batch
        return tuple(tensor[self.place.rank :: self.place.world] for tensor in batch)

    def update(self, batch: Batch) -> tuple[float, int, bool]:
        """One optimisation step on this rank's `batch`; the loss and tokens over all ranks and whether to stop."""
        self.model.train()
        loss = self.loss_of(self.model, batch)
        if not torch.isfinite(loss):
            raise SeqrlError(f"training loss became {loss.item()} at step {self.step}; lower --lr or check the dataset")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        tokens, stop = self.tokens_in(batch), self.stop_signal is not None
        if self.place.world > 1:
            loss, tokens, stop = self.all_reduce(loss.detach(), tokens, stop)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item(), tokens, stop

    def all_reduce(self, loss: torch.Tensor, tokens: int, stop: bool) -> tuple[torch.Tensor, int, bool]:
        """Average gradients and loss over the ranks in one all-reduce; the sum of tokens; any rank's stop."""
        grads = [param.grad for param in self.model.parameters() if param.grad is not None]
        extra = torch.tensor([loss.item(), tokens, float(stop)], device=loss.device)  # (3,)
        flat = torch.cat([grad.reshape(-1).float() for grad in grads] + [extra])  # (parameters + 3,)
        dist.all_reduce(flat)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad) / self.place.world)
            offset += grad.numel()
        loss_sum, token_sum, stops = flat[offset:].tolist()
        return torch.tensor(loss_sum / self.place.world), round(token_sum), stops > 0

    @torch.no_grad()
    def evaluate(self, batches: Sequence[Batch]) -> float | None:
        """Mean loss over held-out batches in eval mode (no dropout), or None without any."""
        if not batches:
            return None
        self.model.eval()
        total = sum(self.loss_of(self.model, batch).item() * len(batch[0]) for batch in batches)
        return total / sum(len(batch[0]) for batch in batches)

    def record(self, lr: float, held_out_loss: float | None) -> None:
        """Append a metrics record (mean train loss since the last one) to metrics.jsonl and keep it as the summary."""
        self.summary = {
            "step": self.step,
            "tokens": self.tokens,
            "train_loss": float(np.mean(self.pending)),
            "held_out_loss": held_out_loss,
            "lr": lr,
            "elapsed": round(self.elapsed, 3),
        }
        self.pending = []
        if self.place.rank == 0:  # the other ranks wait for it in the next update's all-reduce
            if self.evaluation is not None:
                self.summary.update(self.evaluation.run(self.write_files, self.summary, self.out))
            with open(self.out / METRICS_FILE, "a") as file:
                file.write(json.dumps(self.summary) + "\n")
            if self.board is not None:
                write_scalars(self.board, self.summary)

    def save(self) -> None:
        """Replace `out` in one rename with the model files, training state and metrics of this step (rank 0 writes)."""
        device = next(self.model.parameters()).device
        rng = {"rng_cpu": torch.get_rng_state()}
        if device.type == "cuda":
            rng["rng_cuda"] = torch.cuda.get_rng_state(device)
        rank_states = [rng]
        if self.place.world > 1:
            rank_states = [None] * self.place.world
            dist.all_gather_object(rank_states, rng)
        if self.place.rank == 0:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                **rank_states[0],
                "rng_ranks": rank_states,
                "step": self.step,
                "tokens": self.tokens,
                "elapsed": self.elapsed,
                "pending": self.pending,
                "summary": json.dumps(self.summary),
            }
            try:
                self.write_checkpoint(state)
            except (OSError, RuntimeError, SafetensorError) as error:  # a full disk, as each writer reports it
                intact = f"the checkpoint of step {self.saved_step} is intact"
                if self.saved_step is None:
                    intact = "there is no earlier checkpoint"
                reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
                raise SeqrlError(
                    f"cannot save step {self.step} to {self.out} ({reason}); {intact}; "
                    "free disk space and continue with --resume"
                ) from None
        self.saved_step = self.step

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        """The files of this step: `out` replaced as a whole, and with --keep-checkpoints a copy in its history."""
        metrics = (self.out / METRICS_FILE).read_bytes()
        history = self.out / HISTORY_DIR
        if self.options.keep_checkpoints:
            with atomic_directory(history / f"step-{self.step}") as staging:
                self.write_files(staging, self.summary)
        with atomic_directory(self.out) as staging:
            self.write_files(staging, self.summary)
            torch.save(state, staging / TRAINING_STATE_FILE)
            (staging / METRICS_FILE).write_bytes(metrics)
            for kept in (history, self.out / BEST_DIR):  # last, so a failed save leaves them where they were
                if kept.is_dir():
                    kept.rename(staging / kept.name)
