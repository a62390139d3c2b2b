"""Which orthomosaics an inbox has already processed, keyed by content fingerprint.

A claim is an exclusively-created file (``O_EXCL``), so two overlapping runs never process the
same file; a finished survey leaves a ``.done`` record, a failed one a ``.failed`` record with the
reason (the same bytes are not retried; delete the record to retry). A claim whose process is
gone (a crash) is taken over by the next run.

A run hashes only the files that changed since the runs before: the ledger keeps each inbox file's
fingerprint with what the file system says of it (device, inode, size, modification and change
times in ns; ``fingerprints.json``). An inbox of 50 orthomosaics of 2.5 GB was read whole by every
run (125 GB); now a run reads what is new. Writing to a file always moves its change time, which
no user call can set back, so a file rewritten in place is hashed again.

Records written before the fingerprint became BLAKE3 are keyed by BLAKE2b (``pipeline.fingerprint``).
The first run that finds such records notes when it started (``fingerprint-change.json``); a file
older than that and not known by its BLAKE3 key is hashed the earlier way once, and a record found
so is moved to its BLAKE3 key. Files that arrived later are never hashed twice, so the cost ends
with the files from before the change. (One of those copied in again, with a new time, is surveyed
once more.)
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.fingerprint import earlier_file_fingerprint, file_fingerprint, is_earlier
from pipeline.fsutil import write_json

CHANGE_RECORD = "fingerprint-change.json"
FINGERPRINTS = "fingerprints.json"


class Ledger:
    """Which inbox files were processed, claimed or failed: one small JSON file per content hash."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._earlier_before = self._fingerprint_change()
        self._known = self._read_fingerprints()
        self._seen: dict[str, dict[str, Any]] = {}

    def _read_fingerprints(self) -> dict[str, dict[str, Any]]:
        try:
            known = json.loads((self.root / FINGERPRINTS).read_text())
        except (OSError, ValueError):  # none yet, or unreadable: every file is hashed once more
            return {}
        return known if isinstance(known, dict) else {}

    def fingerprint(self, path: Path) -> str:
        """The file's fingerprint: the one kept from an earlier run while the file system says the same
        of the file, else hashed now."""
        status = path.stat()
        said = [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]
        kept = self._known.get(str(path))
        if isinstance(kept, dict) and kept.get("stat") == said and isinstance(kept.get("fingerprint"), str):
            key = kept["fingerprint"]
        else:
            key = file_fingerprint(path)
        self._seen[str(path)] = {"stat": said, "fingerprint": key}
        return str(key)

    def keep_fingerprints(self) -> None:
        """Keep the fingerprints of the files this run looked at (files gone from the inbox drop out)."""
        write_json(self.root / FINGERPRINTS, self._seen)

    def _records(self) -> list[Path]:
        return [*self.root.glob("*.done"), *self.root.glob("*.failed")]

    def _fingerprint_change(self) -> float | None:
        """When this ledger first ran with BLAKE3 keys (epoch seconds), if it holds earlier records."""
        change = self.root / CHANGE_RECORD
        if change.exists():
            return float(json.loads(change.read_text())["epoch_s"])
        if not any(is_earlier(path.stem) for path in self._records()):
            return None
        now = datetime.now(UTC)
        write_json(change, {"utc": now.isoformat(timespec="seconds"), "epoch_s": now.timestamp()})
        return now.timestamp()

    def adopt_earlier(self, path: Path, key: str) -> bool:
        """Whether ``path``, not known by ``key``, was processed under its earlier (BLAKE2b) key: if so
        that record moves to ``key``. Only files from before the fingerprint change are hashed again."""
        if self._earlier_before is None or self.is_done(key) or path.stat().st_mtime >= self._earlier_before:
            return False
        earlier = earlier_file_fingerprint(path)
        for old, new in ((self._done(earlier), self._done(key)), (self._failed(earlier), self._failed(key))):
            if old.exists():
                write_json(new, json.loads(old.read_text()) | {"earlier_key": earlier})
                old.unlink()
                return True
        return False

    def _claim(self, key: str) -> Path:
        return self.root / f"{key}.claim"

    def _done(self, key: str) -> Path:
        return self.root / f"{key}.done"

    def _failed(self, key: str) -> Path:
        return self.root / f"{key}.failed"

    def is_done(self, key: str) -> bool:
        """Whether these bytes were already surveyed (their .done record exists)."""
        return self._done(key).exists() or self._failed(key).exists()

    def _stale(self, claim: Path) -> bool:
        try:
            owner = json.loads(claim.read_text())
        except (OSError, ValueError):
            return False
        if owner.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError):
            return False
        return False

    def claim(self, key: str, source: str) -> bool:
        """True if this process now owns ``key`` (not done, not claimed by a live process)."""
        if self.is_done(key):
            return False
        path = self._claim(key)
        if path.exists() and self._stale(path):
            path.unlink(missing_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(
                {
                    "source": source,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "claimed_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                },
                fh,
            )
        return True

    def finish(self, key: str, record: dict[str, Any]) -> None:
        """Record a finished survey and drop the claim."""
        write_json(self._done(key), record | {"finished_utc": datetime.now(UTC).isoformat(timespec="seconds")})
        self._claim(key).unlink(missing_ok=True)

    def fail(self, key: str, record: dict[str, Any]) -> None:
        """Record why a file failed, so the next run does not retry the same bytes for ever."""
        write_json(self._failed(key), record | {"failed_utc": datetime.now(UTC).isoformat(timespec="seconds")})
        self._claim(key).unlink(missing_ok=True)

    def failed(self) -> list[dict[str, Any]]:
        """The .failed records (files that are not retried until the record is deleted)."""
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*.failed"))]

    def release(self, key: str) -> None:
        """Give a claim back after a failure, so a later run retries the file."""
        self._claim(key).unlink(missing_ok=True)

    def done(self) -> list[dict[str, Any]]:
        """The .done records, sorted by key."""
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*.done"))]
