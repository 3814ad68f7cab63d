"""Offline datasets: one loader for Minari, D4RL HDF5 and Decision Transformer pickles, one in-memory form."""

import difflib
import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from seqrl import SeqrlError
from seqrl.envs.families import Reference, d4rl_reference
from seqrl.envs.make import check_box_spaces

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
MAX_METADATA_BYTES = 16 << 20  # a Minari metadata.json is a few KB
# Everything a pickle of numpy arrays needs; anything else could run code on load, so it is refused.
PICKLE_GLOBALS = {
    "numpy.ndarray",
    "numpy.dtype",
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy._core.numeric._frombuffer",
    "_codecs.encode",
}


@dataclass
class Episode:
    """One episode; row t is step t: the observation seen, the action taken, then its reward and end flags."""

    observations: np.ndarray  # (T, obs_dim) float32
    actions: np.ndarray  # (T, act_dim) float32
    rewards: np.ndarray  # (T,) float32
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool

    def __len__(self) -> int:
        return len(self.rewards)


@dataclass
class OfflineDataset:
    """Episodes of one env gathered from one or more sources."""

    episodes: list[Episode]
    sources: list[str]
    env_id: str | None
    reference: Reference | None = None  # its own reference returns (Minari's ref scores); None: D4RL's for env_id

    @property
    def obs_dim(self) -> int:
        """Length of an observation vector."""
        return self.episodes[0].observations.shape[1]

    @property
    def act_dim(self) -> int:
        """Length of an action vector."""
        return self.episodes[0].actions.shape[1]

    @property
    def num_steps(self) -> int:
        """Steps over all episodes."""
        return sum(len(episode) for episode in self.episodes)

    @property
    def returns(self) -> np.ndarray:
        """Undiscounted return of each episode, float64."""
        return np.array([episode.rewards.sum(dtype=np.float64) for episode in self.episodes])

    @property
    def lengths(self) -> np.ndarray:
        """Steps in each episode."""
        return np.array([len(episode) for episode in self.episodes])

    @property
    def observation_mean(self) -> np.ndarray:
        """Per-dimension mean of all observations, float32 (obs_dim,)."""
        return self._all_observations().mean(axis=0).astype(np.float32)

    @property
    def observation_std(self) -> np.ndarray:
        """Per-dimension std of all observations plus 1e-6, so it can divide, float32 (obs_dim,)."""
        return (self._all_observations().std(axis=0) + 1e-6).astype(np.float32)

    def stats(self) -> dict:
        """JSON-able summary: sizes, returns, lengths, normalized score (and its reference) and observation moments."""
        returns, lengths = self.returns, self.lengths
        reference = self.reference or d4rl_reference(self.env_id)
        scores = [reference.score(r) for r in returns] if reference else [None]
        return {
            "sources": self.sources,
            "env_id": self.env_id,
            "reference": reference.source if reference else None,
            "episodes": len(self.episodes),
            "steps": self.num_steps,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "length_mean": float(lengths.mean()),
            "length_min": int(lengths.min()),
            "length_max": int(lengths.max()),
            "normalized_score_mean": None if scores[0] is None else float(np.mean(scores)),
            "observation_mean": self.observation_mean.tolist(),
            "observation_std": self.observation_std.tolist(),
        }

    def _all_observations(self) -> np.ndarray:
        return np.concatenate([episode.observations for episode in self.episodes], dtype=np.float64)


def datasets_root() -> Path:
    """Where Minari dataset ids resolve, as in minari: MINARI_DATASETS_PATH if set, else ~/.minari/datasets."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root is not None else Path.home() / ".minari" / "datasets"


def local_dataset_ids(root: Path) -> list[str]:
    """Ids of the Minari datasets stored under `root` (each a directory holding data/metadata.json)."""
    return sorted(path.parents[1].relative_to(root).as_posix() for path in root.glob("**/data/metadata.json"))


def load_dataset(spec: str, download: bool = False) -> OfflineDataset:
    """Load comma-separated sources (Minari ids or directories, D4RL .hdf5 files, DT .pkl files) as one dataset.

    A Minari id that is not under the datasets root is downloaded from Minari's remote when `download` is set.
    """
    sources = [part.strip() for part in spec.split(",") if part.strip()]
    if not sources:
        raise SeqrlError("no dataset given: pass a Minari dataset id or directory, a D4RL .hdf5 file or a DT .pkl file")
    episodes, env_ids, dims = [], {}, {}
    for source in sources:
        source_episodes, env_id = _load_source(source, download)
        if not source_episodes:
            raise SeqrlError(f"{source} holds no episodes: pick a dataset with data in it")
        dims[source] = _dims(source, source_episodes)
        if env_id is not None:
            env_ids[source] = env_id
        episodes += source_episodes
    if len(set(dims.values())) > 1:
        listing = ", ".join(f"{s} (obs {o}, act {a})" for s, (o, a) in dims.items())
        raise SeqrlError(f"datasets differ in observation/action sizes: {listing}; combine datasets of one env")
    if len(set(env_ids.values())) > 1:
        listing = ", ".join(f"{s} ({e})" for s, e in env_ids.items())
        raise SeqrlError(f"datasets come from different envs: {listing}; combine datasets of one env")
    return OfflineDataset(episodes, sources, next(iter(env_ids.values()), None), dataset_reference(spec))


def dataset_reference(spec: str) -> Reference | None:
    """The ref_min_score/ref_max_score of the first local Minari dataset in `spec` that has them (metadata only)."""
    for source in (part.strip() for part in spec.split(",") if part.strip()):
        data_path = _minari_data_path(source)
        fields = _minari_metadata(data_path) if data_path is not None else None
        low, high = (fields.get("ref_min_score"), fields.get("ref_max_score")) if fields else (None, None)
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (low, high))
        if numbers and np.isfinite([low, high]).all() and low != high:
            return Reference(float(low), float(high), f"minari:{fields.get('dataset_id') or source}")
    return None


def _minari_data_path(source: str) -> Path | None:
    """The data/ directory a Minari directory or id (under the datasets root) names, if there is one."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path if path.name == "data" else path / "data"
    if path.is_file():
        return None
    data_path = datasets_root() / source / "data"
    return data_path if data_path.is_dir() else None


def _minari_metadata(data_path: Path) -> dict | None:
    """The JSON object in data/metadata.json, or None when it is missing, too large or not a JSON object."""
    metadata = data_path / "metadata.json"
    try:
        fields = json.loads(metadata.read_bytes()) if metadata.stat().st_size <= MAX_METADATA_BYTES else None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return fields if isinstance(fields, dict) and fields else None


def download_minari_dataset(dataset_id: str) -> None:
    """Download a Minari dataset from Minari's remote (MINARI_REMOTE) into the datasets root, or a one-line error."""
    import minari

    remote = os.environ.get("MINARI_REMOTE", "hf://farama-minari")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # minari's "a newer version exists" notes
            minari.download_dataset(dataset_id)
    except OSError as error:  # requests' and huggingface_hub's connection and HTTP errors are OSErrors
        raise SeqrlError(
            f"cannot download {dataset_id}: the Minari remote {remote} is unreachable ({type(error).__name__}); "
            f"connect to the network, or copy the dataset into {datasets_root()}"
        ) from None
    except (ValueError, KeyError) as error:  # not on the remote, no version for this minari, or a bad MINARI_REMOTE
        raise SeqrlError(f"cannot download {dataset_id} from {remote}: {_first_line(error)}") from None


def _load_source(source: str, download: bool = False) -> tuple[list[Episode], str | None]:
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix in (".hdf5", ".h5"):
            return _read_d4rl_hdf5(path), None
        if path.suffix in (".pkl", ".pickle"):
            return _read_dt_pickle(path), None
        raise SeqrlError(
            f"{path}: unknown file type {path.suffix!r}; "
            "expected a D4RL .hdf5/.h5 file or a Decision Transformer .pkl file"
        )
    if path.is_dir():
        return _read_minari(path if path.name == "data" else path / "data")
    root = datasets_root()
    if (root / source / "data").is_dir():
        return _read_minari(root / source / "data")
    close = difflib.get_close_matches(source, local_dataset_ids(root) if root.is_dir() else [], n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    minari_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)*-v\d+", source)  # namespace/name-v0: maybe on Minari's servers
    if minari_id and download:
        download_minari_dataset(source)
        return _read_minari(root / source / "data")
    remote = (
        f", or fetch it with `MINARI_DATASETS_PATH={root} minari download {source}` (or add --download)"
        if minari_id
        else ""
    )
    raise SeqrlError(
        f"no dataset {source!r}: not a file, a directory or a Minari dataset under {root}; {hint}"
        f"set MINARI_DATASETS_PATH (or --datasets-root) to the Minari datasets root, or pass a path{remote}"
    )


def _read_minari(data_path: Path) -> tuple[list[Episode], str | None]:
    import minari

    if not (data_path / "metadata.json").is_file():
        raise SeqrlError(
            f"{data_path.parent}: not a Minari dataset (no data/metadata.json); pass a Minari dataset directory or id"
        )
    metadata = data_path / "metadata.json"
    if _minari_metadata(data_path) is None:
        raise SeqrlError(f"{metadata} is empty, too large or not a JSON object; re-create or re-download the dataset")
    try:
        dataset = minari.MinariDataset(data_path)
        check_box_spaces(dataset.observation_space, dataset.action_space, str(data_path.parent))
        episodes = [
            # Minari stores T + 1 observations (the final one too); row t keeps the one acted on.
            _episode(
                f"{data_path} episode {e.id}", e.observations[:-1], e.actions, e.rewards, e.terminations, e.truncations
            )
            for e in dataset.iterate_episodes()
        ]
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as error:
        raise SeqrlError(
            f"{data_path}: unreadable Minari dataset ({_first_line(error)}); re-create or re-download it"
        ) from None
    return episodes, dataset.env_spec.id if dataset.env_spec is not None else None


def _read_d4rl_hdf5(path: Path) -> list[Episode]:
    import h5py

    try:
        with h5py.File(path, "r") as file:
            missing = [key for key in D4RL_KEYS if key not in file]
            if missing:
                raise SeqrlError(
                    f"{path}: missing D4RL key(s) {', '.join(missing)}; a D4RL file needs {', '.join(D4RL_KEYS)} "
                    "(for a Minari dataset pass its directory or id)"
                )
            groups = [key for key in D4RL_KEYS if not isinstance(file[key], h5py.Dataset)]
            if groups:
                raise SeqrlError(
                    f"{path}: D4RL key(s) {', '.join(groups)} are HDF5 groups, not arrays; is it a D4RL file?"
                )
            arrays = [file[key][()] for key in D4RL_KEYS]
    except OSError as error:
        raise SeqrlError(
            f"{path}: not a readable HDF5 file ({_first_line(error)}); re-download or re-create it"
        ) from None
    return _split_episodes(_episode(str(path), *arrays))


def _read_dt_pickle(path: Path) -> list[Episode]:
    try:
        with open(path, "rb") as file:
            trajectories = _ArrayUnpickler(file).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise SeqrlError(f"{path}: not a readable pickle ({_first_line(error)}); re-download or re-create it") from None
    if not isinstance(trajectories, list) or not all(isinstance(t, dict) for t in trajectories):
        raise SeqrlError(f"{path}: expected a Decision Transformer pickle, a list of per-episode dicts")
    episodes = []
    for i, trajectory in enumerate(trajectories):
        where = f"{path} episode {i}"
        end_key = "terminals" if "terminals" in trajectory else "dones"
        missing = [key for key in ("observations", "actions", "rewards", end_key) if key not in trajectory]
        if missing:
            raise SeqrlError(
                f"{where}: missing key(s) {', '.join(missing)}; "
                "each episode needs observations, actions, rewards and terminals (or dones)"
            )
        terminations = np.asarray(trajectory[end_key], dtype=bool).reshape(-1)
        truncations = np.zeros_like(terminations)
        truncations[-1:] = ~terminations[-1:]  # an episode that did not terminate was cut off by the time limit
        arrays = (trajectory["observations"], trajectory["actions"], trajectory["rewards"], terminations, truncations)
        episodes.append(_episode(where, *arrays))
    return episodes


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if f"{module}.{name}".replace("numpy.core.", "numpy._core.") not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}, which is not numpy data")
        return super().find_class(module, name)


def _episode(
    where: str,
    observations: ArrayLike,
    actions: ArrayLike,
    rewards: ArrayLike,
    terminations: ArrayLike,
    truncations: ArrayLike,
) -> Episode:
    """Check one episode's arrays (or a flat run of steps) and convert them to seqrl's dtypes."""
    arrays = {
        "observations": observations,
        "actions": actions,
        "rewards": rewards,
        "terminations": terminations,
        "truncations": truncations,
    }
    for name, array in arrays.items():
        dtype = bool if name in ("terminations", "truncations") else np.float32
        try:
            arrays[name] = np.asarray(array).astype(dtype)
        except (TypeError, ValueError):
            raise SeqrlError(
                f"{where}: {name} is not a numeric array; seqrl needs flat Box observations and actions"
            ) from None
        ndim = 2 if name in ("observations", "actions") else 1
        if arrays[name].ndim != ndim:
            shape = "(steps, dim)" if ndim == 2 else "(steps,)"
            raise SeqrlError(
                f"{where}: {name} has shape {arrays[name].shape}, expected {shape}; "
                "seqrl needs flat Box observations and actions"
            )
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise SeqrlError(f"{where}: arrays differ in length ({listing}); every array needs one row per step")
    if lengths["rewards"] == 0:
        raise SeqrlError(f"{where}: empty episode; drop it from the file")
    for name in ("observations", "actions", "rewards"):
        bad_rows = np.flatnonzero(~np.isfinite(arrays[name].reshape(lengths[name], -1)).all(axis=1))
        if bad_rows.size:
            raise SeqrlError(f"{where}: {name} has NaN/inf at row {bad_rows[0]}; clean or drop those steps")
    return Episode(**arrays)


def _split_episodes(steps: Episode) -> list[Episode]:
    """Cut a flat run of steps after each termination or truncation; a trailing partial episode ends truncated."""
    ends = list(np.flatnonzero(steps.terminations | steps.truncations) + 1)
    if not ends or ends[-1] != len(steps):
        steps.truncations[-1] = True
        ends.append(len(steps))
    bounds = zip([0, *ends[:-1]], ends)
    return [
        Episode(
            steps.observations[a:b],
            steps.actions[a:b],
            steps.rewards[a:b],
            steps.terminations[a:b],
            steps.truncations[a:b],
        )
        for a, b in bounds
    ]


def _dims(source: str, episodes: list[Episode]) -> tuple[int, int]:
    dims = {(e.observations.shape[1], e.actions.shape[1]) for e in episodes}
    if len(dims) > 1:
        raise SeqrlError(
            f"{source}: episodes differ in observation/action sizes {sorted(dims)}; each source needs one env"
        )
    return dims.pop()


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
