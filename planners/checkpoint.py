"""Checkpoint directories: HF-compatible `config.json` + `model.safetensors`, plus seqrl's `seqrl.json`."""

import ctypes
import dataclasses
import os
import re
import shutil
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from seqrl import SeqrlError
from seqrl.agents.options import InvalidOption, Spec, convert
from seqrl.planners.files import MAX_WEIGHTS_BYTES, checked_size, file_digest, file_sha256
from seqrl.planners.metadata import CONFIG_FILE, META_FILE, WEIGHTS_FILE, read_json, write_json
from torch import nn

LEGACY_WEIGHTS_FILE = "pytorch_model.bin"
__all__ = ["WEIGHTS_FILE", "file_digest"]  # re-exported: the agents log the digest, trainers name the file
BUNDLED_PREFIX = "bundled:"  # as logs name bundled agents, e.g. bundled:hopper-dt


def resolve_checkpoint(spec: str | os.PathLike, hub_fallback: bool = False) -> Path:
    """Local directory of a checkpoint: a path, `bundled:NAME`, or `hf:ORG/NAME[@REVISION]` from the hub.

    With `hub_fallback` (transformers' `from_pretrained` rule), a missing path shaped like ORG/NAME is a hub id too;
    the command line passes False, so a mistyped `runs/tt-hopper` is an error naming the path.
    """
    from seqrl.agents.bundled import resolve_bundled
    from seqrl.planners.hub import HUB_PREFIX, download_checkpoint

    name = str(spec)
    if name.startswith(HUB_PREFIX):
        return download_checkpoint(name.removeprefix(HUB_PREFIX))
    if name.startswith(BUNDLED_PREFIX):
        return resolve_bundled(name.removeprefix(BUNDLED_PREFIX))
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise SeqrlError(f"checkpoint {path} is a file; pass the directory that holds {CONFIG_FILE}")
    if hub_fallback and re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not name.startswith("."):
        return download_checkpoint(name)
    raise SeqrlError(
        f"checkpoint directory {path} not found; check the path (hub checkpoints are given as {HUB_PREFIX}ORG/NAME)"
    )


def weights_file(directory: Path) -> Path:
    """The checkpoint's `model.safetensors`, else HF's older `pytorch_model.bin`, or a one-line error."""
    for name in (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE):
        if os.path.lexists(Path(directory) / name):
            return Path(directory) / name
    raise SeqrlError(
        f"{directory} has no {WEIGHTS_FILE} or {LEGACY_WEIGHTS_FILE}; pass a complete checkpoint directory"
    )


def weight_shapes(directory: Path) -> dict[str, tuple[int, ...]] | None:
    """Name -> shape of each tensor in `model.safetensors`, read from its header alone; None for `pytorch_model.bin`."""
    path = weights_file(directory)
    checked_size(path, MAX_WEIGHTS_BYTES)
    if path.name != WEIGHTS_FILE:
        return None
    try:
        with safe_open(path, framework="pt") as file:
            return {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    except Exception as error:  # safetensors reports a bad header as its own error types
        raise SeqrlError(f"{path} is not a valid safetensors file ({error}); re-save the checkpoint") from None


def check_weights_digest(directory: Path) -> None:
    """Compare `model.safetensors` with the SHA-256 seqrl.json recorded at save (a plain HF checkpoint has none)."""
    meta, weights = Path(directory) / META_FILE, Path(directory) / WEIGHTS_FILE
    expected = read_json(meta).get("weights_sha256") if meta.exists() else None
    if expected is not None and file_sha256(weights) != expected:
        raise SeqrlError(
            f"{weights} does not match the SHA-256 in {meta} (corrupted or replaced); re-save the checkpoint"
        )


def load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint's weights file (`weights_file`), all finite (`check_weights` comes first)."""
    path = weights_file(directory)
    checked_size(path, MAX_WEIGHTS_BYTES)
    if path.name == WEIGHTS_FILE:
        try:
            state = load_file(path)
        except Exception as error:
            raise SeqrlError(
                f"cannot read the weights in {path} ({type(error).__name__}: {error}); re-save the checkpoint"
            ) from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch's message would advise unsafe loading: name the problem only
            raise SeqrlError(
                f"{path} is no plain tensor file ({type(error).__name__}); seqrl loads weights only and runs no code "
                f"from files: re-save the weights as {WEIGHTS_FILE}"
            ) from None
        if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
            raise SeqrlError(f"{path} does not hold a dict of tensors; re-save the weights as {WEIGHTS_FILE}")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise SeqrlError(
                f"weight {name} in {path} holds NaN or infinite values; the checkpoint is broken, retrain it"
            )
    return state


def save_state_dict(directory: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Write `model.safetensors` (mode 0644, like the other files) with the metadata transformers requires."""
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()}
    save_file(tensors, Path(directory) / WEIGHTS_FILE, metadata={"format": "pt"})
    os.chmod(Path(directory) / WEIGHTS_FILE, 0o644)


def _staging_names(final: Path) -> tuple[Path, Path]:
    """The hidden directories of a save into `final`: the new checkpoint being written, and the one it replaced."""
    return final.with_name(f".{final.name}.tmp"), final.with_name(f".{final.name}.old")


def recover_interrupted_save(final: Path) -> None:
    """Put a checkpoint back at `final` when a save was interrupted between its two renames (see `atomic_directory`)."""
    staging, previous = _staging_names(Path(final))
    if os.path.lexists(final):
        return
    if previous.is_dir() and staging.is_dir():  # final was renamed away only after staging was complete
        staging.rename(final)
    elif previous.is_dir():
        previous.rename(final)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_cwd, rename_exchange = -100, 2
    return renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), rename_exchange) == 0


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `final` once the block succeeds; at every point of the replacement,
    `final` holds the old or the new checkpoint (or, between the fallback's two renames, `recover_interrupted_save`
    puts one back)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_save(final)
    staging, previous = _staging_names(final)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(previous, ignore_errors=True)  # `final` is whole (recovered above): its predecessor can go
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists() and _exchange(staging, final):  # staging now holds the old checkpoint
        shutil.rmtree(staging, ignore_errors=True)
        return
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)


class PretrainedConfig:
    """Mixin for config dataclasses that read and write Hugging Face's `config.json`, validated when built.

    `limits` gives the range of each numeric field, so an absurd size is refused before any model is built.
    """

    model_type: ClassVar[str]
    architecture: ClassVar[str]
    limits: ClassVar[dict[str, Spec]] = {}

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            spec = self.limits.get(field.name, Spec(help=""))
            setattr(self, field.name, convert(field.name, getattr(self, field.name), hints[field.name], spec))
        self.check()

    def check(self) -> None:
        """Rules that tie several fields together; subclasses raise `SeqrlError` when one is broken."""

    def to_dict(self) -> dict[str, Any]:
        """The fields plus the keys transformers needs to pick the class."""
        return {**dataclasses.asdict(self), "model_type": self.model_type, "architectures": [self.architecture]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = CONFIG_FILE) -> Self:
        """Build from a config dict read from `source`, ignoring the extra keys transformers writes."""
        found = data.get("model_type", cls.model_type)
        if found != cls.model_type:
            raise SeqrlError(f"checkpoint is a {found!r} model, not a {cls.model_type!r} one; pick the matching agent")
        names = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in names})
        except InvalidOption as error:
            raise SeqrlError(f"{source}: {error}; fix the config") from None

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write `config.json` into `directory`."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        write_json(Path(directory) / CONFIG_FILE, self.to_dict())

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike) -> Self:
        """Read `config.json` from a checkpoint directory or hub id."""
        recover_interrupted_save(Path(path_or_id))
        directory = resolve_checkpoint(path_or_id, hub_fallback=True)
        return cls.from_dict(read_json(directory / CONFIG_FILE), str(directory / CONFIG_FILE))


class PretrainedModel(nn.Module):
    """Mixin giving HF-style `from_pretrained` / `save_pretrained` to a module built from a config."""

    config_class: ClassVar[type[PretrainedConfig]]
    ignored_keys: ClassVar[tuple[str, ...]] = ()  # regexes of buffers HF files may carry and seqrl drops

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike) -> Self:
        """Load weights and config from a checkpoint directory or hub id, in eval mode."""
        recover_interrupted_save(Path(path_or_id))
        directory = resolve_checkpoint(path_or_id, hub_fallback=True)
        config = cls.config_class.from_pretrained(directory)
        state = cls.check_weights(directory, config)
        state = load_state_dict(directory) if state is None else state
        model = cls(config)
        model.load_state_dict({key: value for key, value in state.items() if not cls.ignored(key)})
        return model.eval()

    @classmethod
    def ignored(cls, key: str) -> bool:
        """Whether `key` is a buffer HF files may carry and seqrl drops."""
        return any(re.search(pattern, key) for pattern in cls.ignored_keys)

    @classmethod
    def check_weights(cls, directory: Path, config: PretrainedConfig) -> dict[str, torch.Tensor] | None:
        """Check the weights' names and shapes against `config` before the model is built: from the safetensors header
        alone (returns None), or from `pytorch_model.bin`'s tensors, which have no header (returns them)."""
        shapes, state = weight_shapes(directory), None
        if shapes is None:  # read in full, bounded by the file's size
            state = load_state_dict(directory)
            shapes = {key: tuple(tensor.shape) for key, tensor in state.items()}
        else:
            check_weights_digest(directory)
        cls.check_shapes(directory, config, shapes)
        return state

    @classmethod
    def check_shapes(cls, directory: Path, config: PretrainedConfig, shapes: dict[str, tuple[int, ...]]) -> None:
        """Refuse weights whose names or shapes differ from those `config` implies (found on the meta device)."""
        with torch.device("meta"):  # shapes only: allocates nothing
            expected = {key: tuple(tensor.shape) for key, tensor in cls(config).state_dict().items()}
        shapes = {key: shape for key, shape in shapes.items() if not cls.ignored(key)}
        missing = sorted(set(expected) - set(shapes))
        unexpected = sorted(set(shapes) - set(expected))
        if missing or unexpected:
            raise SeqrlError(
                f"weights in {directory} do not fit {cls.__name__}: "
                f"missing {missing[:4]}, unexpected {unexpected[:4]}; "
                "is this the right kind of checkpoint?"
            )
        for key, shape in shapes.items():
            if shape != expected[key]:
                raise SeqrlError(
                    f"weight {key} in {directory} has shape {shape} but the config implies "
                    f"{expected[key]}; config.json and the weights disagree"
                )

    def state_dict_to_save(self) -> dict[str, torch.Tensor]:
        """The tensors `save_pretrained` writes; subclasses add buffers transformers expects."""
        return self.state_dict()

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write `config.json` and `model.safetensors` into `directory`."""
        self.config.save_pretrained(directory)
        save_state_dict(Path(directory), self.state_dict_to_save())
