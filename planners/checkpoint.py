"""Checkpoint directories: HF-compatible `config.json` + `model.safetensors`, plus seqrl's `seqrl.json`."""

import dataclasses
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from seqrl import SeqrlError
from seqrl.planners.metadata import CONFIG_FILE, read_json, write_json

WEIGHTS_FILE = "model.safetensors"
LEGACY_WEIGHTS_FILE = "pytorch_model.bin"
BUNDLED_PREFIX = "bundled:"  # as logs name bundled agents, e.g. bundled:hopper-dt


def resolve_checkpoint(spec: str | os.PathLike, hub_fallback: bool = False) -> Path:
    """Local directory of a checkpoint: a path, `bundled:NAME`, or `hf:ORG/NAME[@REVISION]` from the hub.

    With `hub_fallback` (transformers' `from_pretrained` rule), a missing path shaped like ORG/NAME is a hub id too;
    the command line passes False, so a mistyped `runs/tt-hopper` is an error naming the path.
    """
    from seqrl.agents.bundled import BUNDLED_ROOT
    from seqrl.planners.hub import HUB_PREFIX, download_checkpoint

    name = str(spec)
    if name.startswith(HUB_PREFIX):
        return download_checkpoint(name.removeprefix(HUB_PREFIX))
    if name.startswith(BUNDLED_PREFIX):
        bundled = name.removeprefix(BUNDLED_PREFIX)
        shipped = sorted(path.name for path in BUNDLED_ROOT.iterdir() if path.is_dir())
        if bundled not in shipped:
            raise SeqrlError(f"no bundled checkpoint {bundled!r}; bundled ones are {', '.join(shipped)}")
        return BUNDLED_ROOT / bundled
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
        if (Path(directory) / name).exists():
            return Path(directory) / name
    raise SeqrlError(f"{directory} has no {WEIGHTS_FILE} or {LEGACY_WEIGHTS_FILE}; pass a complete checkpoint directory")


def load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint's weights file (`weights_file`)."""
    path = weights_file(directory)
    try:
        if path.name == WEIGHTS_FILE:
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise SeqrlError(f"cannot read the weights in {directory} ({type(error).__name__}: {error})") from None


def save_state_dict(directory: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Write `model.safetensors` with the `{"format": "pt"}` metadata transformers requires."""
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()}
    save_file(tensors, Path(directory) / WEIGHTS_FILE, metadata={"format": "pt"})


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256, to tell checkpoints apart in logs."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `final` in one rename once the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = final.with_name(f".{final.name}.old")
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)


class PretrainedConfig:
    """Mixin for config dataclasses that read and write Hugging Face's `config.json`."""

    model_type: ClassVar[str]
    architecture: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The fields plus the keys transformers needs to pick the class."""
        return {**dataclasses.asdict(self), "model_type": self.model_type, "architectures": [self.architecture]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from a config dict, ignoring the extra keys transformers writes."""
        found = data.get("model_type", cls.model_type)
        if found != cls.model_type:
            raise SeqrlError(f"checkpoint is a {found!r} model, not a {cls.model_type!r} one; pick the matching agent")
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write `config.json` into `directory`."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        write_json(Path(directory) / CONFIG_FILE, self.to_dict())

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike) -> Self:
        """Read `config.json` from a checkpoint directory, else a hub id (transformers' rule)."""
        return cls.from_dict(read_json(resolve_checkpoint(path_or_id, hub_fallback=True) / CONFIG_FILE))


class PretrainedModel(nn.Module):
    """Mixin giving HF-style `from_pretrained` / `save_pretrained` to a module built from a config."""

    config_class: ClassVar[type[PretrainedConfig]]
    ignored_keys: ClassVar[tuple[str, ...]] = ()  # regexes of buffers HF files may carry and seqrl drops

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike) -> Self:
        """Load weights and config from a checkpoint directory, else a hub id (transformers' rule), in eval mode."""
        directory = resolve_checkpoint(path_or_id, hub_fallback=True)
        model = cls(cls.config_class.from_pretrained(directory))
        state = {
            key: value
            for key, value in load_state_dict(directory).items()
            if not any(re.search(pattern, key) for pattern in cls.ignored_keys)
        }
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise SeqrlError(
                f"weights in {directory} do not fit {cls.__name__}: missing {missing[:4]}, unexpected {unexpected[:4]}; "
                "is this the right kind of checkpoint?"
            )
        for key, tensor in state.items():
            if tensor.shape != expected[key].shape:
                raise SeqrlError(
                    f"weight {key} in {directory} has shape {tuple(tensor.shape)} but the config implies "
                    f"{tuple(expected[key].shape)}; config.json and the weights disagree"
                )
        model.load_state_dict(state)
        return model.eval()

    def state_dict_to_save(self) -> dict[str, torch.Tensor]:
        """The tensors `save_pretrained` writes; subclasses add buffers transformers expects."""
        return self.state_dict()

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write `config.json` and `model.safetensors` into `directory`."""
        self.config.save_pretrained(directory)
        save_state_dict(Path(directory), self.state_dict_to_save())
