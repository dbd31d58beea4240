"""The ledger of every API request: an append-only JSONL file, one event per line, flushed as written.

Nothing is ever rewritten, so a kill at any moment leaves at worst a torn last line, which is dropped on the
next open. The state (what is answered, what is in flight, what was spent) is replayed from the events:

- ``intent``    written and fsynced *before* a batch is created: its request ids and the time;
- ``submitted`` the batch id the API gave (or found again after a crash: ``adopted``);
- ``abandoned`` an intent that never reached the API (no such batch on the server);
- ``result``    one per answered request (batch or live): type, tokens, USD, the answer or why not;
- ``finished``  every result of a batch has been recorded;
- ``rejected``  an adopted batch turned out not to hold our requests.

A lock file keeps two runs from writing one ledger at the same time.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_net.utils import UserError

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.jsonl"
# The result fields that hold a valid answer: instruct's instructions, the evaluate judge's score and reason.
ANSWER_FIELDS = ("instructions", "answer")


class Ledger:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / LEDGER_FILE
        self._lock_fd: int | None = None
        self._f: Any = None

    def __enter__(self) -> Ledger:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"{self.dir}: another run holds this ledger; wait for it to finish (or kill it: a rerun resumes)"
            ) from None
        self._lock_fd = fd
        self._repair_tail()
        self._f = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._f:
            self._f.close()
            self._f = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _repair_tail(self) -> None:
        """Drop a torn last line (a kill in the middle of a write) so the next event starts on its own line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            log.warning("ledger %s: dropping a torn last line (%d bytes) left by a kill", self.path, len(data) - cut)
            with self.path.open("r+b") as f:
                f.truncate(cut)
                f.flush()
                os.fsync(f.fileno())

    def append(self, event: dict[str, Any], sync: bool = False) -> dict[str, Any]:
        """Write one event (stamped with the time) and return it. Flushed at once, so a killed process loses
        nothing; ``sync`` also fsyncs (against power loss) for the events that guard against paying twice."""
        event = {"ts": round(time.time(), 3), **event}
        self._f.write(json.dumps(event, ensure_ascii=False, sort_keys=True) + "\n")
        self._f.flush()
        if sync:
            os.fsync(self._f.fileno())
        return event

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        with self.path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    break  # torn tail (only possible when read without the lock)
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(
                        f"{self.path}:{i}: not valid JSON; the ledger was edited by hand? Restore it or move it away"
                        " (moving it away means paying again for every answer)"
                    ) from None
        return out


@dataclass
class Submission:
    sub: str
    mode: str
    keys: list[str]
    ts: float
    est_usd: float = 0.0
    batch_id: str | None = None
    adopted: bool = False
    abandoned: bool = False
    finished: bool = False
    rejected: bool = False


@dataclass
class State:
    """What the events say: answered keys, every result, the submissions and their progress."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> the first valid result
    results: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    subs: dict[str, Submission] = field(default_factory=dict)
    seen: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # sub -> custom ids recorded

    @classmethod
    def replay(cls, events: list[dict[str, Any]]) -> State:
        st = cls()
        for ev in events:
            st.apply(ev)
        return st

    def apply(self, ev: dict[str, Any]) -> None:
        kind = ev.get("ev")
        if kind == "intent":
            self.subs[ev["sub"]] = Submission(ev["sub"], ev["mode"], list(ev["keys"]), ev["ts"], ev.get("est_usd", 0.0))
        elif kind in ("submitted", "abandoned", "finished", "rejected"):
            s = self.subs.get(ev["sub"])
            if s is None:
                return
            if kind == "submitted":
                s.batch_id, s.adopted = ev["batch_id"], bool(ev.get("adopted"))
            else:
                setattr(s, kind, True)
        elif kind == "result":
            sub = ev.get("sub")
            if sub:
                if ev["key"] in self.seen[sub]:
                    return  # recorded twice (results read again after a kill): count it once
                self.seen[sub].add(ev["key"])
            self.results[ev["key"]].append(ev)
            if any(ev.get(f) for f in ANSWER_FIELDS) and ev["key"] not in self.done:
                self.done[ev["key"]] = ev

    def in_flight(self) -> list[Submission]:
        """Batches whose results are not all recorded (including intents not known to have reached the API)."""
        return [s for s in self.subs.values() if s.mode == "batch" and not (s.finished or s.abandoned or s.rejected)]

    def usd(self, keys: set[str] | None = None) -> float:
        return sum(r.get("usd", 0.0) for k, rs in self.results.items() if keys is None or k in keys for r in rs)
