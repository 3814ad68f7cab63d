"""The JSONL episode log: one line per finished episode, on disk (fsync) as soon as the episode ends.

Resume rule: a line belongs to the same run when its env_id, agent, seed base (seed - episode) and
config match, the seqrl version excepted; `--resume` skips those episodes. A log that holds
episodes but none of this run is an error, so changed settings are never mixed into one run.
"""

import json
import os
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
    )


def _run_key(record: dict[str, Any]) -> dict[str, Any]:
    """What must match for two lines to belong to one run."""
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    seed_base = record["seed"] - record["episode"] if "seed" in record and "episode" in record else None
    run = {"env_id": record.get("env_id"), "agent": record.get("agent"), "seed": seed_base}
    return run | {f"config.{key}": value for key, value in config.items() if key != "seqrl_version"}


class EpisodeLog:
    """An append-only JSONL file of finished episodes; a torn last line (from a crash) is dropped on open."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            raise SeqrlError(f"--log {self.path} is a directory; pass a file such as {self.path / 'runs.jsonl'}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records = self._read() if self.path.exists() else []
        self.file = open(self.path, "a", encoding="utf-8")

    def _read(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SeqrlError(f"{self.path} is not a text file; pass a seqrl episode log (.jsonl) or a new file") from None
        lines = text.split("\n")  # the last item is "" when the file ends with a newline
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            elif number < len(lines):
                raise SeqrlError(f"{self.path} line {number} is not a JSON object; is this a seqrl episode log? fix or remove that line")
            else:  # a last line without its newline is a write cut short by a crash: drop it
                with open(self.path, "r+b") as file:
                    file.truncate(len(text.encode()) - len(line.encode()))
                return records
        if lines[-1]:  # a complete last line without its newline: end it before appending
            with open(self.path, "a", encoding="utf-8") as file:
                file.write("\n")
        return records

    def finished(self, env_id: str, agent: str, config: dict[str, Any], seed: int) -> dict[int, dict[str, Any]]:
        """The lines this run already logged, by episode; an error if the log holds only other runs."""
        run = _run_key({"env_id": env_id, "agent": agent, "config": config, "seed": seed, "episode": 0})
        done = {record["episode"]: record for record in self.records if _run_key(record) == run}
        if self.records and not done:
            last = _run_key(self.records[-1])
            differences = [f"{key} {last.get(key)!r} there, {run.get(key)!r} here" for key in {**last, **run} if last.get(key) != run.get(key)]
            raise SeqrlError(
                f"cannot resume: {self.path} holds episodes of another run ({'; '.join(differences[:3])}); "
                "rerun with the same settings, or log to a new file"
            )
        return done

    def append(self, record: dict[str, Any]) -> None:
        """Write one line and force it to disk."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        """Close the file."""
        self.file.close()
