"""Lock files: exclusive create, stale detection, race-safe removal, contention between processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

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


def _contend(final: str, start: float, out: mp.Queue) -> None:
    from pathlib import Path

    while time.time() < start:
        time.sleep(0.001)
    lock = try_acquire(Path(final), f"p{os.getpid()}")
    out.put(lock is not None)
    time.sleep(0.2)
    if lock:
        lock.release()


def test_many_processes_one_winner_even_over_a_stale_lock(tmp_path):
    final = tmp_path / "s.h5"
    lock_path_for(final).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "run_id": "dead"}))
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start = time.time() + 0.3
    procs = [ctx.Process(target=_contend, args=(str(final), start, out)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
    wins = [out.get(timeout=5) for _ in procs]
    assert sum(wins) == 1
