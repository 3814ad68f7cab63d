"""Shared fixtures: the installed `seqrl` command, run the same way by every test, and the shared datasets."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# SEQRL_DATASETS (when set and not empty) overrides the checkout's ../shared/datasets
SHARED_DATASETS = Path(os.environ.get("SEQRL_DATASETS") or Path(__file__).parents[1].parent / "shared" / "datasets")
SeqrlRunner = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def seqrl_command() -> Path:
    """The `seqrl` command installed beside this Python."""
    return Path(sys.executable).parent / "seqrl"


@pytest.fixture(scope="session")
def run_seqrl(seqrl_command: Path) -> SeqrlRunner:
    """Run the installed `seqrl` with these arguments (in `cwd`, with `env` added); returns the finished process."""

    def run(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120):
        environment = {**os.environ, "COLUMNS": "200", **(env or {})}
        command = [str(seqrl_command), *map(str, args)]
        return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def seqrl(run_seqrl: SeqrlRunner, tmp_path: Path) -> SeqrlRunner:
    """`run_seqrl` in the test's tmp_path."""

    def run(*args: object, **options: object) -> subprocess.CompletedProcess:
        return run_seqrl(*args, cwd=tmp_path, **options)

    return run


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared Minari datasets root (SEQRL_DATASETS, else ../shared/datasets); skips the test when absent."""
    if not (SHARED_DATASETS / "zoo").is_dir():
        pytest.skip(f"no shared datasets at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny models on one thread: they gain nothing from more, and threads stall on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
