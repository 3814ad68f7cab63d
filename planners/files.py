"""Bounded reads of checkpoint files: regular files of sensible size only, so a link to /dev/zero is one line."""

import errno
import hashlib
import os
from pathlib import Path

from seqrl import SeqrlError

MAX_SMALL_FILE_BYTES = 64 << 20  # config.json, seqrl.json and discretizer.npz: kilobytes to a few megabytes
MAX_WEIGHTS_BYTES = 16 << 30  # far over any model seqrl trains on one machine


def checked_size(path: Path, max_bytes: int) -> int:
    """The size of `path` when it is a regular file of at most `max_bytes`; FileNotFoundError when it is missing."""
    try:
        status = os.stat(path)  # follows links: a loop is ELOOP, a link to /dev/zero a character device
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SeqrlError(f"{path} is a symbolic link loop; replace it with the file itself") from None
        raise SeqrlError(f"cannot read {path} ({error.strerror}); check the file and its permissions") from None
    if not os.path.isfile(path):
        raise SeqrlError(
            f"{path} is not a regular file (a device, pipe or directory?); replace it with the file itself"
        )
    if status.st_size > max_bytes:
        raise SeqrlError(f"{path} is {status.st_size:,} bytes, over the {max_bytes:,} allowed; is it the right file?")
    return status.st_size


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (checked again while reading: the file may grow)."""
    checked_size(path, max_bytes)
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except IsADirectoryError:
        raise SeqrlError(f"{path} is a directory; replace it with the file itself") from None
    except PermissionError:
        raise SeqrlError(f"cannot read {path} (permission denied); check its permissions") from None
    if len(data) > max_bytes:
        raise SeqrlError(f"{path} grew over the {max_bytes:,} bytes allowed while being read; is it the right file?")
    return data


def file_sha256(path: Path, max_bytes: int = MAX_WEIGHTS_BYTES) -> str:
    """The SHA-256 (hex) of a regular file of at most `max_bytes`."""
    remaining = checked_size(path, max_bytes)
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while remaining > 0 and (chunk := file.read(min(1 << 20, remaining))):
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256, to tell checkpoints apart in logs."""
    return file_sha256(path)[:16]
