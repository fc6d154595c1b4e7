"""The audit trail: one JSON line per store, query, retrieve, delete and refused access, appended and flushed.

A line looks like
  {"time": "2026-11-28T03:55:01.123456Z", "who": "CT_SCANNER", "from": "10.0.0.7:50712", "what": "C-STORE",
   "studies": ["1.2.3"], "outcome": "success", "status": 0, "sop": "1.2.3.4"}
`who` is the calling AE title (DIMSE), the DICOMweb user or token name, or "anonymous"; `from` is the peer's
IP:port ("local" for a command on this machine); `outcome` is "success", "warning", "failure" or "refused";
`status` the DIMSE or HTTP status. Further keys (counts, sop, path, reason) depend on `what`.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from engine.config import Settings

LOGGER = logging.getLogger(__name__)

OUTCOMES = ("success", "warning", "failure", "refused")
Detail = str | int | float | bool | None | list[str]


class AuditLog:
    """A thread-safe appender of audit lines to one file; `AuditLog(None)` records nothing.

    Each line is one write() on a file opened for appending (O_APPEND), with no buffer in between, so lines
    from several threads or processes never interleave and a crash loses at most the line being written.
    """

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._fd: int | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # 0o600 at creation: the trail names patients' studies and who looked at them.
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditLog:
        """The trail [audit] asks for (ARCHIVE/audit.log by default; nothing when disabled). Raises OSError."""
        return cls(settings.audit_path)

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def record(self, what: str, *, who: str, where: str, outcome: str, status: int | None = None,
               studies: Iterable[str] = (), **details: Detail) -> None:
        """Append one event. Never raises for a failing disk: the failure is logged instead, since refusing
        the operation being audited would turn a full disk into an outage of every service."""
        if self._fd is None:
            return
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        entry: dict[str, Detail] = {
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "who": who,
            "from": where,
            "what": what,
            "studies": sorted(set(studies)),
            "outcome": outcome,
            "status": status,
        }
        entry.update(details)
        line = json.dumps(entry, ensure_ascii=True, separators=(", ", ": ")) + "\n"
        with self._lock:
            if self._fd is None:
                return
            try:
                # One unbuffered write per line: nothing waits in a buffer, and O_APPEND places it whole.
                os.write(self._fd, line.encode("ascii"))
            except OSError as exc:
                LOGGER.error("cannot write the audit log %s: %s (event: %s)", self.path, exc, line.strip())

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def local_user() -> str:
    """Who runs a command on this machine, for `who` of a CLI event: "cli:" and the login name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return f"cli:uid{os.getuid()}"


def read_audit(path: Path | str) -> list[dict[str, object]]:
    """Every event of an audit file, oldest first (for tests and tools)."""
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]
