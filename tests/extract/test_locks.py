"""Lock files: exclusive create, stale detection, race-safe removal, contention between processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

import pytest

from gpfm.extract.locks import LockInfo, break_stale_lock, lock_path_for, try_acquire


def test_exclusive_and_release(tmp_path):
    final = tmp_path / "s.h5"
    lock = try_acquire(final, "run-a")
    assert lock is not None
    info = json.loads(lock_path_for(final).read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["run_id"] == "run-a"
    assert try_acquire(final, "run-b") is None  # our own pid is alive: not stale
    lock.release()
    assert not lock_path_for(final).exists()
    again = try_acquire(final, "run-b")
    assert again is not None
    again.release()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_dead_holder_on_this_host_is_stale(tmp_path):
    final = tmp_path / "s.h5"
    lock_path_for(final).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "run_id": "old"}))
    lock = try_acquire(final, "new")
    assert lock is not None
    assert json.loads(lock_path_for(final).read_text())["run_id"] == "new"
    assert not list(tmp_path.glob("*.stale-*"))
    lock.release()


def test_other_host_needs_ttl(tmp_path):
    final = tmp_path / "s.h5"
    path = lock_path_for(final)
    path.write_text(json.dumps({"pid": 1, "host": "some-other-node", "run_id": "remote"}))
    assert try_acquire(final, "new", ttl_s=3600) is None
    old = time.time() - 7200
    os.utime(path, (old, old))
    assert LockInfo.read(path).stale_reason(3600).startswith("heartbeat")
    lock = try_acquire(final, "new", ttl_s=3600)
    assert lock is not None
    lock.release()


def test_fresh_lock_is_not_broken(tmp_path):
    final = tmp_path / "s.h5"
    lock = try_acquire(final, "a")
    assert not break_stale_lock(lock_path_for(final))
    assert lock.still_held()
    lock.release()


def test_heartbeat_refreshes_mtime(tmp_path):
    final = tmp_path / "s.h5"
    lock = try_acquire(final, "a", heartbeat_s=0.05)
    path = lock_path_for(final)
    old = time.time() - 1000
    os.utime(path, (old, old))
    time.sleep(0.3)
    assert path.stat().st_mtime > old + 900
    lock.release()


def _contend(final: str, start: float, out: mp.Queue, tried: object) -> None:
    from pathlib import Path

    while time.time() < start:
        time.sleep(0.001)
    lock = try_acquire(Path(final), f"p{os.getpid()}")
    out.put(lock is not None)
    tried.wait(timeout=20)  # hold the lock until every contender has tried: a win must be exclusive
    if lock:
        lock.release()


@pytest.mark.parametrize("stale_first", [False, True])
def test_many_processes_one_winner(tmp_path, stale_first):
    final = tmp_path / "s.h5"
    if stale_first:  # every contender also races to break the same dead holder's lock
        lock_path_for(final).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    tried = ctx.Barrier(6)
    start = time.time() + 0.3
    procs = [ctx.Process(target=_contend, args=(str(final), start, out, tried)) for _ in range(6)]
    for p in procs:
        p.start()
    wins = [out.get(timeout=20) for _ in procs]
    for p in procs:
        p.join(10)
    assert sum(wins) == 1
    assert not list(tmp_path.glob("*.stale-*")) and not list(tmp_path.glob("*.break"))


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    from gpfm.extract.locks import remove_stale_temps

    final = tmp_path / "s.h5"
    host = socket.gethostname()
    dead = tmp_path / f"s.h5.tmp-{host}-{_dead_pid()}-abcd"
    alive = tmp_path / f"s.h5.tmp-{host}-{os.getpid()}-abcd"
    remote_old = tmp_path / "s.h5.tmp-other-node-12-abcd"
    remote_new = tmp_path / "s.h5.tmp-other-node-13-abcd"
    other_file = tmp_path / "t.h5.tmp-x-1-abcd"
    for p in (dead, alive, remote_old, remote_new, other_file):
        p.write_bytes(b"partial")
    old = time.time() - 10_000
    os.utime(remote_old, (old, old))
    assert sorted(remove_stale_temps(final, ttl_s=3600)) == sorted([dead, remote_old])
    assert alive.exists() and remote_new.exists() and other_file.exists()
