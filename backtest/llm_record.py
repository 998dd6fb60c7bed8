"""The record of a replay's LLM answers (one JSON line per answer, keyed by question), and
the tally of what a replay's LLM calls cost.

An entry's key is the hash of the question (the schema asked for, the system and the user
message), the data time T it was asked at and the sampling index. It holds the answer (or,
for an answer off the schema, the fallback reason it gave), the model, the requests it took
and the tokens and cost the server reported, and the prompt itself.

Why JSON lines: one answer a line, appended and flushed as each answer arrives, so an
interrupted run keeps every answer it paid for and a rerun asks only for the rest (as the
history store resumes); a crash can only tear the last line, which the next run drops; a
person can read, grep and diff it (prompt, answer, model, tokens); it needs no dependency.
It is keyed by the prompt, not the model: keep one record per model. An entry is about
2 KB (its prompt: 1,971 bytes on average over a 240-bar test run), two or three per decision,
so a year of hourly decisions is about 50 MB on disk; a replay keeps only the answers in
memory, not the prompts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

log = logging.getLogger(__name__)

#: A record's key: the prompt's hash, the data time T (ms) and the sampling index.
Key = tuple[str, int, int]


def prompt_hash(schema: type[BaseModel], system: str, user: str) -> str:
    """Return the SHA-256 of a question: the schema asked for and both messages."""
    text = json.dumps([schema.__name__, system, user], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One recorded answer: its key, the answer (or why there was none), model and tokens.

    ``failure`` is the fallback reason of an answer that did not fit the schema (then
    ``answer`` is None). The tokens are what the server reported over the ``requests`` the
    answer took (None: it reported none); ``cost`` is at the prices configured then.
    """

    prompt_hash: str
    data_ms: int
    sampling: int
    schema: str
    model: str | None
    answer: dict[str, Any] | None
    failure: str | None
    requests: int
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    system: str
    user: str

    @property
    def key(self) -> Key:
        """Return the entry's key in the record."""
        return (self.prompt_hash, self.data_ms, self.sampling)

    @property
    def data_time(self) -> datetime:
        """Return the data time T the answer was asked at."""
        return datetime.fromtimestamp(self.data_ms / 1000, UTC)

    def line(self) -> str:
        """Return the entry as one JSON line (with the data time in ISO too, for people)."""
        shown = {"v": 1, **asdict(self), "data_time": self.data_time.isoformat()}
        return json.dumps(shown, separators=(",", ":")) + "\n"

    @classmethod
    def parse(cls, line: str) -> Entry:
        """Return the entry of one line; ValueError (or KeyError, TypeError) if it is not one."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        data.pop("v", None)
        data.pop("data_time", None)
        return cls(**data)


class RecordError(ValueError):
    """A record that cannot be used: a line that is not an entry (other than a torn last
    line), or, for a grid cell, a record this process cannot see or write where the grid
    put it (``backtest/grid.py``)."""


class Record:
    """The answers of earlier runs, in a JSON-lines file (module docstring), and new ones."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._index: dict[Key, Entry] | None = None

    def entries(self) -> list[Entry]:
        """Return every entry in the file, in the order written."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as handle:
            text = handle.read()
        lines = text.split("\n")
        kept, torn = lines[:-1], lines[-1]  # the text after the last newline
        found = []
        for number, line in enumerate(kept, start=1):
            if not line.strip():
                continue
            try:
                found.append(Entry.parse(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise RecordError(f"{self.path}: line {number} is not an answer ({exc})") from None
        if torn.strip():
            # a crash mid-write: drop the torn line so the next answer starts a line of its own
            log.warning("%s: dropped a torn last line (an interrupted write)", self.path)
            with self.path.open("r+", encoding="utf-8") as handle:
                handle.truncate(len(text.encode()) - len(torn.encode()))
        return found

    def _entries(self) -> dict[Key, Entry]:
        if self._index is None:
            # the prompts stay in the file: the index keeps what a replay needs
            self._index = {}
            for entry in self.entries():
                self._index.setdefault(entry.key, replace(entry, system="", user=""))
        return self._index

    def get(self, key: Key) -> Entry | None:
        """Return the entry recorded under ``key``, or None."""
        return self._entries().get(key)

    def add(self, entry: Entry) -> None:
        """Append ``entry`` to the file (flushed before this returns) and to the index."""
        index = self._entries()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(entry.line())
        index.setdefault(entry.key, replace(entry, system="", user=""))

    def __len__(self) -> int:
        """Return how many keys the record answers."""
        return len(self._entries())


@dataclass(frozen=True)
class LLMTally:
    """What a replay's LLM calls cost: requests made, answers recorded and replayed, tokens.

    ``requests`` are HTTP requests to the LLM server (a way the server refused counts too);
    ``recorded`` the answers (and answers off the schema) written to the record, ``replayed``
    those served from it at no cost; ``fallbacks`` the agents (long, short, strategy) answered
    below the LLM, by the cache or the rules. The tokens are what the server reported for this
    run's requests; ``replayed_*`` what the replayed answers cost when they were asked.
    ``cost`` is None without a price (``llm.price_per_1k_tokens``).
    """

    model: str | None = None
    record: str | None = None
    sampling: int = 0
    requests: int = 0
    failed: int = 0
    unmetered: int = 0
    recorded: int = 0
    replayed: int = 0
    fallbacks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    replayed_prompt_tokens: int = 0
    replayed_completion_tokens: int = 0
    replayed_cost: float | None = None

    def __sub__(self, earlier: LLMTally) -> LLMTally:
        """Return what was counted since ``earlier`` (the labels are this tally's)."""
        counts = {name: getattr(self, name) - getattr(earlier, name) for name in _COUNTS}
        return dataclasses.replace(
            self,
            **counts,
            cost=_less(self.cost, earlier.cost),
            replayed_cost=_less(self.replayed_cost, earlier.replayed_cost),
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the tally as JSON-able data, with the ``tokens`` totals added."""
        return {
            **dataclasses.asdict(self),
            "tokens": self.prompt_tokens + self.completion_tokens,
            "replayed_tokens": self.replayed_prompt_tokens + self.replayed_completion_tokens,
        }


#: The whole-number counts of a tally (the rest are labels and costs).
_COUNTS = (
    "requests", "failed", "unmetered", "recorded", "replayed", "fallbacks", "prompt_tokens",
    "completion_tokens", "replayed_prompt_tokens", "replayed_completion_tokens",
)  # fmt: skip


def _less(now: float | None, then: float | None) -> float | None:
    return None if now is None else now - (then or 0.0)


@runtime_checkable
class Metered(Protocol):
    """A strategy that asks an LLM and counts what that cost (``backtest.llm_replay``)."""

    def tally(self) -> LLMTally:
        """Return everything counted so far."""
        ...
