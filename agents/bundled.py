"""Trained agents shipped inside the package: one checkpoint directory per env family and method."""

from pathlib import Path

from seqrl import SeqrlError
from seqrl.envs.families import env_family

BUNDLED_ROOT = Path(__file__).parent / "checkpoints"  # <family>-<method>/, e.g. hopper-dt/
METHODS = ("dt", "tt")  # the default is the first one bundled: DT acts fastest


def bundled_methods(env_id: str) -> list[str]:
    """Methods with a bundled checkpoint for this env, default first."""
    return [method for method in METHODS if (BUNDLED_ROOT / f"{env_family(env_id)}-{method}").is_dir()]


def bundled_checkpoint(env_id: str, method: str | None = None) -> Path | None:
    """The bundled checkpoint of `method` (default: the env's default method) for this env, if one ships."""
    methods = bundled_methods(env_id)
    if method is None:
        method = methods[0] if methods else None
    if method not in methods:
        return None
    return BUNDLED_ROOT / f"{env_family(env_id)}-{method}"


def resolve_bundled(name: str) -> Path:
    """The bundled checkpoint directory NAME (as logs write it, `bundled:NAME`), e.g. hopper-dt."""
    directory = BUNDLED_ROOT / name
    if not name or "/" in name or not directory.is_dir():
        shipped = ", ".join(sorted(path.name for path in BUNDLED_ROOT.iterdir() if path.is_dir()))
        raise SeqrlError(f"no bundled checkpoint {name!r}; bundled: {shipped}")
    return directory
