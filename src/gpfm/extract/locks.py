"""Per-slide lock files: exclusive create, heartbeat, stale detection and race-safe stale removal.

A lock is ``<final>.lock`` holding JSON ``{pid, host, run_id, started_utc}``, created exclusively: the JSON is
written to a unique draft (``O_CREAT | O_EXCL``) and published with ``link(2)``, which — like ``O_EXCL`` —
exactly one of many processes (on one host or on NFS v3+) wins, and which never exposes a half-written lock. The holder
refreshes the lock's mtime every ``heartbeat_s`` seconds. A lock is *stale* when its holder ran on this host and
its pid is dead, or when its heartbeat is older than ``ttl_s``. A stale lock is removed under a short breaker
mutex (``<lock>.break``, also exclusive-create) by renaming it to a unique ``.stale-*`` name, checking that the
renamed file is the very lock judged stale (same inode), and deleting it; the contender then retries the
exclusive create. A check-then-create sequence (TRIDENT's) lets two processes both "win"; this protocol does
not, because the lock is only ever created by ``O_EXCL`` and only removed by its holder or by the one breaker
that re-checked it under the mutex.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 2 * 3600.0
DEFAULT_HEARTBEAT_S = 60.0
#: A lock whose JSON is unreadable (its writer died between create and write) is stale after this grace.
UNREADABLE_GRACE_S = 60.0
#: A ``<lock>.break`` mutex older than this was left by a process that died while breaking a stale lock.
BREAKER_TTL_S = 30.0


def lock_path_for(final: Path) -> Path:
    """``<final>.lock`` next to the output it protects."""
    return final.with_name(final.name + ".lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


@dataclass(frozen=True)
class LockInfo:
    """What a lock file says about its holder (None fields when the file was unreadable)."""

    pid: int | None
    host: str | None
    run_id: str | None
    started_utc: str | None
    mtime: float
    inode: int

    @classmethod
    def read(cls, path: Path) -> LockInfo | None:
        """Read a lock file; None when it does not exist."""
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data: dict[str, Any] = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = {}
        pid = data.get("pid")
        return cls(pid if isinstance(pid, int) else None, data.get("host"), data.get("run_id"),
                   data.get("started_utc"), st.st_mtime, st.st_ino)

    def stale_reason(self, ttl_s: float, now: float | None = None) -> str | None:
        """Why this lock is stale, or None when its holder may still be working."""
        now = time.time() if now is None else now
        age = now - self.mtime
        if self.pid is None:
            return f"unreadable lock older than {UNREADABLE_GRACE_S:.0f} s" if age > UNREADABLE_GRACE_S else None
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return f"holder pid {self.pid} on this host is dead"
        if age > ttl_s:
            return f"heartbeat {age:.0f} s old exceeds the lock TTL {ttl_s:.0f} s"
        return None


def break_stale_lock(path: Path, ttl_s: float = DEFAULT_TTL_S) -> bool:
    """Remove ``path`` if it is a stale lock, race-safely. Returns True when this call removed it.

    Breaking is serialised by a second exclusive-create file, ``<lock>.break``: only its holder may remove the
    lock, and it re-reads the lock under that mutex, so a lock judged stale a moment ago but since replaced by
    a live holder's fresh lock is never removed. The removal itself renames the lock to a unique ``.stale-*``
    name, checks that the moved file is the very lock judged stale (inode), and deletes it. A ``.break`` file
    left by a process that died inside this function expires after :data:`BREAKER_TTL_S`.
    """
    info = LockInfo.read(path)
    if info is None or info.stale_reason(ttl_s) is None:
        return False
    breaker = path.with_name(path.name + ".break")
    try:
        os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - breaker.stat().st_mtime > BREAKER_TTL_S:
                breaker.unlink()
        return False  # someone else is breaking this lock right now
    try:
        current = LockInfo.read(path)
        if current is None or current.inode != info.inode:
            return False  # already broken (and perhaps re-taken) by another process
        reason = current.stale_reason(ttl_s)
        if reason is None:
            return False
        moved = path.with_name(f"{path.name}.stale-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(path, moved)
        except FileNotFoundError:
            return False
        try:
            if moved.stat().st_ino != info.inode:
                # the holder released and someone re-took the lock in between: put it back (never overwrites)
                with contextlib.suppress(FileExistsError):
                    os.link(moved, path)
                return False
            log.warning("removed stale lock %s (%s; run %s)", path, reason, info.run_id)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                moved.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            breaker.unlink()


class SlideLock:
    """An acquired lock; release it with :meth:`release` or by using it as a context manager.

    A daemon thread refreshes the lock's mtime every ``heartbeat_s`` so that other hosts can tell a live holder
    from a dead one by the TTL.
    """

    def __init__(self, path: Path, inode: int, heartbeat_s: float = DEFAULT_HEARTBEAT_S) -> None:
        self.path = path
        self._inode = inode
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), name=f"lock-{path.name}",
                                        daemon=True)
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            if not self.still_held():
                log.error("lock %s was taken over by another process (TTL too short?)", self.path)
                return
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)

    def still_held(self) -> bool:
        """True while the lock file on disk is still the one this process created."""
        try:
            return self.path.stat().st_ino == self._inode
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Stop the heartbeat and delete the lock (only if it is still ours)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.still_held():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> SlideLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_acquire(
    final: Path,
    run_id: str,
    *,
    ttl_s: float = DEFAULT_TTL_S,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
) -> SlideLock | None:
    """Try to lock the output ``final``; None when another live process holds it.

    Args:
        final: the output file the lock protects (the lock is ``<final>.lock``).
        run_id: recorded in the lock so that a human can see who holds it.
        ttl_s: a lock whose heartbeat is older than this is stale (whatever host holds it).
        heartbeat_s: how often the holder refreshes the lock's mtime.
    """
    path = lock_path_for(final)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path, ttl_s)  # drafts of lock files whose writers died before publishing them
    payload = json.dumps({
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "run_id": run_id,
        "started_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }).encode()
    # The lock is written in full under a unique draft name (O_CREAT|O_EXCL), then published with link(2),
    # which is atomic and fails if the lock exists (exclusive create, NFS-safe). A lock is therefore never
    # visible half-written: a process killed between create and write cannot leave an anonymous lock behind.
    draft = path.with_name(f"{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, payload)
        os.fsync(fd)
        inode = os.fstat(fd).st_ino
    finally:
        os.close(fd)
    try:
        for _ in range(3):
            try:
                os.link(draft, path)
            except FileExistsError:
                if break_stale_lock(path, ttl_s):
                    continue
                return None
            except OSError as exc:  # pragma: no cover - file systems without hard links
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                return _acquire_without_link(path, payload, heartbeat_s, ttl_s)
            return SlideLock(path, inode, heartbeat_s)
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            draft.unlink()


def _acquire_without_link(path: Path, payload: bytes, heartbeat_s: float, ttl_s: float) -> SlideLock | None:
    """Plain ``O_CREAT|O_EXCL`` create for file systems without hard links (content written right after)."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if break_stale_lock(path, ttl_s):
                continue
            return None
        try:
            os.write(fd, payload)
            os.fsync(fd)
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        return SlideLock(path, inode, heartbeat_s)
    return None


def remove_stale_temps(final: Path, ttl_s: float = DEFAULT_TTL_S) -> list[Path]:
    """Delete ``<final>.tmp-<host>-<pid>-<rand>`` files left by dead writers; returns what was removed.

    Call it while holding the lock of ``final``: a temp file is removed when its writer ran on this host and its
    pid is dead, or when it is older than ``ttl_s`` (a writer elsewhere that lost its lock long ago).
    """
    removed = []
    host, now = socket.gethostname(), time.time()
    for tmp in final.parent.glob(f"{final.name}.tmp-*"):
        parts = tmp.name[len(final.name) + len(".tmp-"):].rsplit("-", 2)
        try:
            writer_host, pid = parts[0], int(parts[1])
            age = now - tmp.stat().st_mtime
        except (IndexError, ValueError, FileNotFoundError):
            continue
        if (writer_host == host and not _pid_alive(pid)) or age > ttl_s:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed

