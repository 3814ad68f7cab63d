"""Data-parallel training: N local processes (spawned here, or started by torchrun) joined in one process group."""

import atexit
import datetime
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from rich.console import Console
from seqrl import SeqrlError

ArgsT = TypeVar("ArgsT")
COLLECTIVE_TIMEOUT_HOURS = 12  # longest wait of one rank for the others


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes: global rank, their count, rank on this machine."""

    rank: int = 0
    world: int = 1
    local: int = 0
    local_world: int = 1


def ranks() -> Ranks:
    """The ranks that torchrun (or `launch`) gave this process through its environment; one process without them."""
    if "WORLD_SIZE" not in os.environ:
        return Ranks()
    world = int(os.environ["WORLD_SIZE"])
    return Ranks(
        int(os.environ["RANK"]),
        world,
        int(os.environ.get("LOCAL_RANK", 0)),
        int(os.environ.get("LOCAL_WORLD_SIZE", world)),
    )


def needs_launch(nproc: int) -> bool:
    """Whether `--nproc` asks for processes that are not running yet (torchrun starts its own)."""
    return nproc > 1 and "WORLD_SIZE" not in os.environ


def join_group(device: torch.device) -> torch.device:
    """Join the process group of a multi-process run (NCCL on CUDA, gloo on CPU); the device this rank trains on."""
    place = ranks()
    if place.world == 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", place.local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    # the other ranks wait in a collective while rank 0 runs --eval-episodes, which can outlast the 30-minute default
    timeout = datetime.timedelta(hours=COLLECTIVE_TIMEOUT_HOURS)
    dist.init_process_group(backend, rank=place.rank, world_size=place.world, timeout=timeout)
    atexit.register(_destroy_group)  # a run that fails still tears its group down before the interpreter goes
    return device


def leave_group() -> None:
    """End a finished run's process group together: every rank waits for the others, then tears it down."""
    # A rank that tears down (or exits) while another still waits on the group can abort that one with
    # "terminate called without an active exception"; after the barrier no rank uses the group again.
    barrier()
    _destroy_group()


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a one-process run)."""
    if dist.is_initialized():
        dist.barrier()


def launch(train: Callable[[ArgsT], Any], args: ArgsT, nproc: int) -> None:
    """Run `train(args)` in `nproc` spawned processes; forward SIGINT/SIGTERM to them, exit as the first that fails."""
    with socket.socket() as probe:  # a free port for the group's rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.start_processes(_worker, (train, args, nproc, port), nprocs=nproc, join=False, start_method="spawn")

    def forward(signum: int, frame: Any) -> None:
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    previous = {number: signal.signal(number, forward) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as error:
        raise SystemExit(error.exit_code if error.exit_code > 0 else 1) from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _worker(local_rank: int, train: Callable[[ArgsT], Any], args: ArgsT, nproc: int, port: int) -> None:
    """One spawned training process: its ranks in the environment, a user error as one line and status 1."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
    )
    try:
        train(args)
    except SeqrlError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except SystemExit as stop:
        if stop.code not in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            raise
        # stopped by a signal with its checkpoint saved: leave now, as tearing the process group down after the
        # other ranks left aborts the process ("terminate called without an active exception")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stop.code)
