"""Never lose or fake work: kill -9 and rerun, concurrent workers on one folder, torchrun sharding.

Every run — child processes and in-process reruns/references alike — goes through ``run_extract.run`` (tiny
encoder, one thread, batch 8), so features are bit-identical between runs and comparisons are exact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import HERE, h5_payload, link_slides, subprocess_env
from run_extract import run as run_here

from gpfm.extract.locks import LockInfo
from gpfm.wsi import is_complete

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

SCRIPT = str(HERE / "run_extract.py")
FEATURES = Path("20x_256px_0px_overlap") / "features_test-tiny"


def _run(out: Path, slides: list[Path], delay: float = 0.0, wait: bool = True, launcher: list[str] | None = None):
    env = subprocess_env()
    env["GPFM_TEST_DELAY_S"] = str(delay)
    cmd = (launcher or [sys.executable]) + [SCRIPT, str(out), *map(str, slides)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-3000:]
    return output


def _processed_by_run(out: Path) -> dict[str, set[str]]:
    """run_id → slides that run itself finished (from runs/*.json)."""
    result = {}
    for path in (out / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        result[record["run_id"]] = {s["slide_id"] for s in record["slides"]
                                    if s["run_id"] == record["run_id"] and s["status"] == "done"}
    return result


def _assert_same_outputs(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        pa, pb = h5_payload(a / FEATURES / f"{name}.h5"), h5_payload(b / FEATURES / f"{name}.h5")
        for key in pa:
            assert np.array_equal(pa[key], pb[key]), (name, key)


def test_kill_9_then_rerun_completes_identically(tmp_path, cmu, tiny_encoder):
    names = ["s1", "s2", "s3"]
    slides = link_slides(tmp_path / "slides", cmu, names)
    out = tmp_path / "killed"
    proc = _run(out, slides, delay=0.25, wait=False)
    deadline = time.time() + 180
    features = out / FEATURES
    while time.time() < deadline:  # wait until one slide is finished and the next one is mid-extraction
        done = [p for p in features.glob("*.h5")] if features.is_dir() else []
        locks = list(features.glob("*.lock")) if features.is_dir() else []
        if done and locks:
            break
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the extraction never reached the second slide")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    # after the kill: only stale locks (dead pid) remain; a slide is "done" only with a complete file; a slide
    # whose lock remains has either no final file (embedding, or prepared ahead) or a complete one (killed
    # between the atomic rename and the lock release)
    locks = list(features.glob("*.lock"))
    assert locks
    for lock in locks:
        assert LockInfo.read(lock).stale_reason(ttl_s=7200) is not None
    for path in features.glob("*.h5"):
        assert is_complete(path), path
    unfinished = [n for n in names if not (features / f"{n}.h5").exists()]
    assert unfinished and len(unfinished) < len(names)
    for name in names:
        state_file = out / "state" / f"{name}.json"
        if state_file.exists() and json.loads(state_file.read_text())["status"] == "done":
            assert is_complete(features / f"{name}.h5")
    run_here(out, slides)  # the rerun (another process) breaks the stale lock and finishes
    assert sorted(p.name for p in features.iterdir() if not p.name.startswith(".")) == [f"{n}.h5" for n in names]
    reference = tmp_path / "reference"
    run_here(reference, slides)
    _assert_same_outputs(out, reference, names)
    states = {n: json.loads((out / "state" / f"{n}.json").read_text()) for n in names}
    assert all(s["status"] == "done" for s in states.values())
    assert all(states[name]["attempts"] == 2 for name in unfinished if (out / "state" / f"{name}.json").exists())
    assert not list(features.glob("*.lock")) and not list(features.glob("*.tmp-*"))


def test_two_concurrent_workers_never_share_a_slide(tmp_path, cmu, tiny_encoder):
    """A child process and this process work on one folder at the same time; each slide is done once."""
    names = ["c1", "c2", "c3", "c4", "c5"]
    slides = link_slides(tmp_path / "slides", cmu, names)
    out = tmp_path / "shared_job"
    child = _run(out, slides, delay=0.15, wait=False)
    features = out / FEATURES
    deadline = time.time() + 180
    while not (features.is_dir() and list(features.glob("*.lock"))):  # start once the child holds a slide
        assert child.poll() is None and time.time() < deadline, child.stdout.read()[-3000:]
        time.sleep(0.02)
    run_here(out, slides)
    output, _ = child.communicate(timeout=240)
    assert child.returncode == 0, output[-3000:]
    processed = list(_processed_by_run(out).values())
    assert len(processed) == 2
    assert processed[0].isdisjoint(processed[1])
    assert processed[0] | processed[1] == set(names)
    assert all(processed), "both workers should have processed slides"
    for n in names:
        assert is_complete(features / f"{n}.h5")
        assert json.loads((out / "state" / f"{n}.json").read_text())["attempts"] == 1
    assert not list(features.glob("*.lock"))


def test_torchrun_two_ranks_shard_and_match_one_process(tmp_path, cmu, tcga, tiny_encoder):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this python")
    links = link_slides(tmp_path / "slides", cmu, ["t1", "t2", "t3"])
    manifest = tmp_path / "slides.csv"
    manifest.write_text("slide_id,path,mpp\n" + "".join(f"{p.stem},{p}," + "\n" for p in links)
                        + f"tcga,{tcga},0.25\n")
    out = tmp_path / "torchrun"
    output = _run(out, [manifest], launcher=[str(torchrun), "--standalone", "--nproc_per_node", "2"])
    assert output.count("RESULT") == 2, output[-3000:]
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert sorted(r["shard"] for r in records) == ["0/2 (torchrun)", "1/2 (torchrun)"]
    processed = list(_processed_by_run(out).values())
    assert all(processed) and processed[0].isdisjoint(processed[1])
    names = ["t1", "t2", "t3", "tcga"]
    assert processed[0] | processed[1] == set(names)
    single = tmp_path / "single"
    run_here(single, [manifest])
    (record,) = [json.loads(p.read_text()) for p in (single / "runs").glob("*.json")]
    assert record["shard"] == "0/1 (single)"
    _assert_same_outputs(out, single, names)
