"""An exclusive lock on a local output folder: one conversion at a time writes into OUT.

The lock is a file in OUT created atomically (`O_CREAT | O_EXCL`) that names its owner: host, process id,
start time and a run id. A second run is refused with the owner's name. A lock left by a killed run on this
host (its process is gone) is stale and taken over; one from another host cannot be checked and is reported.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid

LOCK_NAME = ".shardflow.lock"
UNREADABLE_STALE_SECONDS = 10.0


class OutputLocked(RuntimeError):
    """Another conversion holds the lock on OUT."""


class OutputLock:
    """Held while a conversion writes into `folder`; `check()` before finalizing, `release()` at the end."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOCK_NAME)
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "run": uuid.uuid4().hex}

    def acquire(self) -> OutputLock:
        """Take the lock, taking over a stale one; raises `OutputLocked` naming a live owner."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if holder is not None and not _is_stale(holder, self.path):
                    raise OutputLocked(self._refusal(holder)) from None
                _remove_stale(self.path, holder)
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(self.owner, f)
            except OSError:  # a full disk: no half-written lock stays behind
                os.remove(self.path)
                raise
            return self
        raise OutputLocked(f"{os.path.dirname(self.path)}: could not take the lock {self.path}; try again")

    def check(self) -> None:
        """Raise `OutputLocked` unless this run still holds the lock (nothing may finalize over another run)."""
        holder = _read(self.path)
        if holder is None or holder.get("run") != self.owner["run"]:
            raise OutputLocked(
                f"{os.path.dirname(self.path)}: another conversion took over this output folder; "
                "this run's results are not written"
            )

    def release(self) -> None:
        """Remove the lock file if it is still this run's."""
        holder = _read(self.path)
        if holder is not None and holder.get("run") == self.owner["run"]:
            os.remove(self.path)

    def _refusal(self, holder: dict) -> str:
        if not holder:
            return f"{os.path.dirname(self.path)} is being written by another conversion (lock file {self.path})"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
        hint = (
            ""
            if holder.get("host") == self.owner["host"]
            else f"; if no conversion runs on {holder.get('host')}, delete {self.path}"
        )
        return (
            f"{os.path.dirname(self.path)} is being written by another conversion "
            f"(pid {holder.get('pid')} on {holder.get('host')}, started {started}){hint}"
        )


def _read(path: str) -> dict | None:
    """The lock's owner; {} for a lock being written right now or unreadable; None when there is no lock."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _is_stale(holder: dict, path: str) -> bool:
    """A lock whose process is gone, on this host; an unreadable one ({}) once it is older than a writer needs."""
    if not holder:
        try:
            return time.time() - os.path.getmtime(path) > UNREADABLE_STALE_SECONDS
        except OSError:
            return False
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


def _remove_stale(path: str, holder: dict | None) -> None:
    """Remove a stale lock, unless another run replaced it meanwhile (only the exact stale content goes)."""
    if holder is None:
        return
    aside = f"{path}.{uuid.uuid4().hex}.stale"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read(aside) != holder:  # another run took over first: put its lock back
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    os.remove(aside)
