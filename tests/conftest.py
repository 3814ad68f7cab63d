"""Shared fixtures: the installed `seqrl` command, run in a scratch directory, and the shared datasets."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

SHARED_DATASETS = Path(os.environ.get("SEQRL_DATASETS") or Path(__file__).parents[1].parent / "shared" / "datasets")


@pytest.fixture(scope="session")
def seqrl_command() -> Path:
    """The `seqrl` command installed beside this Python."""
    return Path(sys.executable).parent / "seqrl"


@pytest.fixture
def seqrl(seqrl_command: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the installed `seqrl` command with these arguments in tmp_path; returns the finished process."""

    def run(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([seqrl_command, *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared Minari datasets root (SEQRL_DATASETS, else ../shared/datasets); skips the test when absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"no shared datasets at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny models on one thread: they gain nothing from more, and threads stall on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
