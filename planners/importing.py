"""`seqrl import`: a complete seqrl checkpoint directory from a plain one plus what it lacks, so it runs offline."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqrl import SeqrlError
from seqrl.agents.options import Options, option
from seqrl.agents.rollout import RolloutOptions


def _rollout_option(name: str) -> Any:
    """The field `seqrl rollout` declares as `name`: the same flag, declared there once."""
    field = RolloutOptions.__dataclass_fields__[name]
    return dataclasses.field(default=field.default, metadata=field.metadata)


@dataclass(frozen=True, kw_only=True)
class ImportOptions(Options):
    """Everything `seqrl import` takes; `settings` are agent settings to store as the checkpoint's defaults."""

    source: str = option(help="Plain checkpoint directory or hf:ORG/NAME[@REVISION] to import.", cli=False)
    out: Path = option(help="Directory to write the complete checkpoint into; must be new or empty.")
    dataset: str | None = _rollout_option("dataset")
    state_mean: str | None = _rollout_option("state_mean")
    state_std: str | None = _rollout_option("state_std")
    state_statistics: Path | None = _rollout_option("state_statistics")
    settings: dict = option({}, "Agent settings (planner or policy) stored as the checkpoint's defaults.", cli=False)


def import_checkpoint(options: ImportOptions) -> str:
    """Write `options.out`: the source's weights and config, and a seqrl.json with its statistics or bins and
    agent defaults; returns a line saying what was written. An existing non-empty `out` is refused."""
    from seqrl.planners.checkpoint import atomic_directory, resolve_checkpoint
    from seqrl.planners.decision.statistics import given_statistics
    from seqrl.planners.hub import hub_repo_id
    from seqrl.planners.registry import method_of

    out = options.out.expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SeqrlError(f"{out} exists and is not empty; pass a new --out DIR (import never overwrites)")
    directory = resolve_checkpoint(options.source)
    method = method_of(directory)
    method.check_settings(options.settings)
    statistics = given_statistics(options.state_mean, options.state_std, options.state_statistics)
    model = method.model_class().from_pretrained(directory)
    meta = method.meta.read(directory)
    extra: dict[str, Any] = {}  # file name -> object with `save(path)` written beside the weights
    if method.kind == "dt":
        meta, origin = _decision_meta(directory, model, meta, options, statistics, hub_repo_id(options.source))
    else:
        if statistics is not None:
            raise SeqrlError(f"{statistics.source}: state statistics apply to Decision Transformers; drop them")
        meta, origin, extra = _trajectory_meta(directory, model, meta, options)
    with atomic_directory(out) as staging:
        model.save_pretrained(staging)
        for name, item in extra.items():
            item.save(staging / name)
        meta.write(staging)  # last: it records the digest of the weights written above
    return f"imported {options.source} into {out} ({origin}); run it with --checkpoint {out}"


def _decision_meta(
    directory: Path,
    model: Any,
    meta: Any,
    options: ImportOptions,
    statistics: Any,
    hub_id: str | None,
) -> tuple[Any, str]:
    """A DT's seqrl.json: state statistics (given, stored, published or the dataset's) and policy defaults."""
    from seqrl.planners.decision.options import PolicySettings
    from seqrl.planners.decision.policy import state_statistics
    from seqrl.planners.decision.published import published_meta

    meta, published = published_meta(meta, hub_id)
    found = state_statistics(directory, meta, published, statistics, options.dataset)
    found = found.checked(model.config.state_dim, "the model's state")
    policy = {**meta.policy, **options.settings}
    PolicySettings.from_dict(policy, "the policy settings")  # checked together before they are stored
    datasets = [options.dataset] if found.source == options.dataset else meta.datasets
    completed = meta.replace(
        kind="dt", state_mean=found.mean.tolist(), state_std=found.std.tolist(), policy=policy, datasets=datasets
    )
    return completed, f"state statistics from {found.source}"


def _trajectory_meta(directory: Path, model: Any, meta: Any, options: ImportOptions) -> tuple[Any, str, dict[str, Any]]:
    """A TT's seqrl.json and its discretizer bins (the checkpoint's, or fitted to the dataset)."""
    from seqrl.planners.trajectory.discretizer import DISCRETIZER_FILE
    from seqrl.planners.trajectory.options import PlannerSettings
    from seqrl.planners.trajectory.planner import checkpoint_discretizer

    config = model.config
    discretizer, bins_source = checkpoint_discretizer(directory, meta, options.dataset, config)
    planner = {**meta.planner, **options.settings}
    PlannerSettings.from_dict({"discount": meta.discount, **planner}, "the planner settings")
    fitted = not (directory / DISCRETIZER_FILE).exists()
    datasets = [options.dataset] if fitted else meta.datasets
    completed = meta.replace(kind="tt", n_bins=config.vocab_size, planner=planner, datasets=datasets)
    return completed, f"bins {bins_source}", {DISCRETIZER_FILE: discretizer}
