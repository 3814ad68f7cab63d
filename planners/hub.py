"""Hugging Face hub checkpoints: `ORG/NAME[@REVISION]` fetched into (or read from) the local HF cache."""

from pathlib import Path

from seqrl import SeqrlError

HUB_PREFIX = "hf:"


def hub_repo_id(spec: str) -> str | None:
    """ORG/NAME of a checkpoint given as `hf:ORG/NAME[@REVISION]`; None for any other checkpoint."""
    return spec.removeprefix(HUB_PREFIX).partition("@")[0] if spec.startswith(HUB_PREFIX) else None


def download_checkpoint(repo: str) -> Path:
    """The local snapshot of hub checkpoint `ORG/NAME[@REVISION]`: fetched, or from the HF cache when offline."""
    repo_id, _, revision = repo.partition("@")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision or None))
    except RevisionNotFoundError:
        raise SeqrlError(f"hub checkpoint {repo_id} has no revision {revision!r}; check the name after '@'") from None
    except RepositoryNotFoundError:
        raise SeqrlError(
            f"hub checkpoint {repo_id} not found (or gated); check the ORG/NAME, or log in with `hf auth login`"
        ) from None
    except LocalEntryNotFoundError:
        raise SeqrlError(
            f"hub checkpoint {repo} is not in the Hugging Face cache and the hub is unreachable "
            "(no network, or HF_HUB_OFFLINE=1); fetch it once online (`hf download "
            f"{repo_id}`), or pass a local checkpoint directory"
        ) from None
    except (OSError, ValueError) as error:  # a bad id, a full disk, an unreadable cache
        raise SeqrlError(f"cannot fetch hub checkpoint {repo} ({type(error).__name__}: {error})") from None
