"""The JSONL episode log: one line per finished episode, on disk (fsync) as soon as the episode ends.

Resume rule: a line belongs to the same run when its env_id, agent, seed base (seed - episode) and
config match, the seqrl version excepted; `--resume` skips those episodes. A log that holds
episodes but none of this run is an error, so changed settings are never mixed into one run.
"""

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqrl import SeqrlError
from seqrl.agents.loop import EpisodeResult


def episode_record(env_id: str, agent: str, result: EpisodeResult, config: dict[str, Any]) -> dict[str, Any]:
    """The log line of one finished episode."""
    return {
        "env_id": env_id,
        "agent": agent,
        "episode": result.episode,
        "seed": result.seed,
        "return": result.episode_return,
        "length": result.length,
        "normalized_score": result.normalized_score,
        "reference": result.reference,
        "terminated": result.terminated,
        "truncated": result.truncated,
        "wall_time_s": result.wall_time_s,
        "config": config,
    }


def record_result(record: dict[str, Any]) -> EpisodeResult:
    """The episode result a log line holds."""
    return EpisodeResult(
        episode=record["episode"],
        seed=record["seed"],
        episode_return=record["return"],
        length=record["length"],
        normalized_score=record["normalized_score"],
        terminated=record["terminated"],
        truncated=record["truncated"],
        wall_time_s=record["wall_time_s"],
        reference=record.get("reference"),  # absent from older logs, whose scores are D4RL's
    )


def _run_key(record: dict[str, Any]) -> dict[str, Any]:
    """What must match for two lines to belong to one run."""
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    seed_base = record["seed"] - record["episode"] if "seed" in record and "episode" in record else None
    run = {"env_id": record.get("env_id"), "agent": record.get("agent"), "seed": seed_base}
    return run | {f"config.{key}": value for key, value in config.items() if key != "seqrl_version"}


MAX_LOG_BYTES = 1 << 30  # an episode line is ~500 bytes: two million episodes fit
RECORD_START = '{"env_id": '  # how every line `episode_record` writes begins, so a torn one is recognised


@dataclass
class LogContents:
    """The finished episodes of a log, and where a torn last line (a write cut short by a crash) starts."""

    records: list[dict[str, Any]]
    torn_at: int | None  # byte offset of the torn line, None when the file ends cleanly
    ends_in_newline: bool


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_log(path: Path) -> LogContents:
    """Parse an episode log, or a one-line error for anything that is not one; the file is never changed."""
    path = Path(path)
    if not path.exists():
        raise SeqrlError(f"log {path} not found; pass the file written by `seqrl rollout --log`")
    if not path.is_file():
        raise SeqrlError(f"log {path} is not a regular file; pass a seqrl episode log (.jsonl) or a new file")
    if path.stat().st_size > MAX_LOG_BYTES:
        raise SeqrlError(
            f"log {path} is over {MAX_LOG_BYTES >> 20} MiB; is it an episode log? split it or log to a new file"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SeqrlError(f"{path} is not a text file; pass a seqrl episode log (.jsonl) or a new file") from None
    lines = text.split("\n")  # the last item is "" when the file ends with a newline
    records = []
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            record = "unreadable"
        if isinstance(record, dict) and _is_number(record.get("episode")) and _is_number(record.get("return")):
            records.append(record)
        elif record is not None:
            if last and line.startswith(RECORD_START):  # cut short by a crash while seqrl wrote it
                return LogContents(records, len(data) - len(line.encode()), ends_in_newline=False)
            raise SeqrlError(
                f"{path} line {number} is not a JSON object of an episode; is this a seqrl episode log? "
                "fix or remove that line, or log to a new file"
            )
    return LogContents(records, None, ends_in_newline=not lines[-1])


class EpisodeLog:
    """An append-only JSONL file of finished episodes, locked against a second writer while open.

    A torn last line that seqrl wrote (a crash mid-write) is dropped on open, and `dropped_torn_line` says so;
    any other line that is not an episode is an error, and the file is left as it was.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            raise SeqrlError(f"--log {self.path} is a directory; pass a file such as {self.path / 'runs.jsonl'}")
        blocking = next((parent for parent in self.path.parents if parent.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise SeqrlError(
                f"--log {self.path}: {blocking} is a file, not a directory; pick another place for the log"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a+b", buffering=0)  # unbuffered: a failed write fails in `append`
        except OSError as error:
            raise SeqrlError(f"cannot open --log {self.path} ({error.strerror}); pick a writable file") from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise SeqrlError(
                f"another seqrl run is writing {self.path}; wait for it to end or log to another file"
            ) from None
        contents = read_log(self.path) if self.path.stat().st_size else LogContents([], None, True)
        self.records = contents.records
        self.dropped_torn_line = contents.torn_at is not None
        if self.dropped_torn_line:
            self.file.truncate(contents.torn_at)
        elif not contents.ends_in_newline:  # a complete last line without its newline: end it before appending
            self.file.write(b"\n")

    def finished(self, env_id: str, agent: str, config: dict[str, Any], seed: int) -> dict[int, dict[str, Any]]:
        """The lines this run already logged, by episode; an error if the log holds only other runs."""
        run = _run_key({"env_id": env_id, "agent": agent, "config": config, "seed": seed, "episode": 0})
        done = {record["episode"]: record for record in self.records if _run_key(record) == run}
        if self.records and not done:
            last = _run_key(self.records[-1])
            differences = [
                f"{key} {last.get(key)!r} there, {run.get(key)!r} here"
                for key in {**last, **run}
                if last.get(key) != run.get(key)
            ]
            raise SeqrlError(
                f"cannot resume: {self.path} holds episodes of another run ({'; '.join(differences[:3])}); "
                "rerun with the same settings, or log to a new file"
            )
        return done

    def append(self, record: dict[str, Any]) -> None:
        """Write one line and force it to disk; a failed write (disk full) leaves the file as it was."""
        line = (json.dumps(record, allow_nan=False) + "\n").encode()  # strict JSON: a NaN return is a ValueError
        end = self.file.seek(0, os.SEEK_END)
        try:
            written = 0
            while written < len(line):  # a raw write may take part of the line
                written += self.file.write(line[written:])
            os.fsync(self.file.fileno())
        except OSError as error:
            try:  # drop the part of the line that reached the file: only bytes this call wrote
                self.file.truncate(end)
            except OSError:
                pass  # then the torn line is dropped, with a message, when the log is next opened
            raise SeqrlError(
                f"cannot write episode {record.get('episode')} to --log {self.path} ({error.strerror}); "
                "the episodes before it are kept: free space and continue with --resume"
            ) from None

    def close(self) -> None:
        """Close the file (which releases its lock)."""
        self.file.close()
