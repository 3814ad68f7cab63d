"""The options every `seqrl train` command shares: data, output, seeding, device and cadence."""

from dataclasses import dataclass
from pathlib import Path

from seqrl.agents.options import MAX_SEED, Options, option


@dataclass(frozen=True, kw_only=True)
class RunArgs(Options):
    """Options of a training run that do not depend on the method."""

    dataset: str = option(help="Dataset(s): Minari id or directory, D4RL .hdf5, DT .pkl; comma-separated to combine.")
    out: Path = option(help="Checkpoint directory to create (or continue with --resume).", resumable=True)
    holdout: float = option(0.05, "Fraction of episodes held out for the held-out loss (0 for none).", low=0, below=1)
    seed: int = option(42, "Seed of initialization, data order, dropout and the held-out split.", low=0, high=MAX_SEED)
    device: str = option("auto", "auto (CUDA when available), cpu, cuda or cuda:N.", resumable=True)
    eval_every: int = option(
        500, "Steps between metrics.jsonl records (train and held-out loss).", low=1, resumable=True
    )
    save_every: int = option(1000, "Steps between checkpoints (always one at the end).", low=1, resumable=True)
    threads: int | None = option(
        None, "CPU threads for torch (default: torch's choice).", low=1, high=1024, resumable=True
    )
    resume: bool = option(
        False, "Continue the run saved in --out (repeat its options; --steps may grow).", resumable=True
    )
    datasets_root: Path | None = option(
        None, "Minari datasets root for dataset ids (sets MINARI_DATASETS_PATH).", resumable=True
    )
    quiet: bool = option(False, "No progress output.", resumable=True)
    download: bool = option(
        False, "Download a Minari dataset id that is not local (minari.download_dataset).", resumable=True
    )
    nproc: int = option(
        1,
        "Data-parallel processes (gloo on CPU, NCCL on GPU); --batch-size is split over them.",
        low=1,
        high=1024,
        resumable=True,
    )
    keep_checkpoints: bool = option(False, "Also keep every save as OUT/checkpoints/step-N/.", resumable=True)
    eval_episodes: int = option(
        0,
        "Episodes run in the dataset's env at every --eval-every record (0: none); the best scoring goes to OUT/best/.",
        low=0,
        high=1024,
    )
    eval_seed: int = option(
        10_000,
        "Seed of the first evaluation episode (episode i: seed + i), apart from the tables' seeds.",
        low=0,
        high=MAX_SEED,
    )
    eval_max_steps: int | None = option(None, "Step cap of each evaluation episode (default: the env's limit).", low=1)
    tensorboard: Path | None = option(
        None, "Also write the metrics as TensorBoard events into this directory.", resumable=True
    )
