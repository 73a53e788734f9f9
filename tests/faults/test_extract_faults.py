"""``gpfm extract`` / ``gpfm wsi summarize`` under hostile input and faults.

Each case: exit code, one-line message naming the file (or row) and the fix, and nothing outside the job
folder changed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpfm.errors import EXIT_ENVIRONMENT, EXIT_INPUT, EXIT_PARTIAL
from gpfm.extract.slides import check_slide_id, slide_id_problem
from tests.faults._helpers import HERE, assert_one_line_error, extract_args, snapshot

FEATURES = Path("20x_256px_0px_overlap") / "features_test-tiny"

BAD_IDS = ["../escape", "/tmp/abs", "a/b", "..", ".hidden", "a\\b", "x" * 300, " padded", "nul\x01char"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_unsafe_slide_ids_are_refused(bad):
    assert slide_id_problem(bad) is not None
    with pytest.raises(ValueError, match="cannot name output files"):
        check_slide_id(bad, "m.csv:2")


@pytest.mark.parametrize("good", ["TCGA-CR-7395-01A-01-TS1", "1.2.840.10008.5.1.4.1.1.77.1.6", "slide_01 (copy)"])
def test_ordinary_ids_pass(good):
    assert slide_id_problem(good) is None


@pytest.mark.realdata
@pytest.mark.parametrize("bad", ["../../escaped", str(Path("/tmp") / "gpfm-fault-abs"), "sub/dir", "..", ".x"])
def test_manifest_id_cannot_write_outside_the_job(tmp_path, gpfm_cli, cmu, tiny_encoder, bad):
    victim_dir = tmp_path / "outside"
    victim_dir.mkdir()
    (victim_dir / "precious.h5").write_bytes(b"keep me")
    manifest = tmp_path / "slides.csv"
    manifest.write_text(f'slide_id,path\nok,{cmu}\n"{bad}",{cmu}\n', encoding="utf-8")
    job = tmp_path / "jobs" / "job"
    before = snapshot(tmp_path, exclude=job)
    result = gpfm_cli(*extract_args(tiny_encoder, job, manifest))
    assert result.code == EXIT_INPUT
    assert_one_line_error(result, "slides.csv:3", "cannot name output files", "slide_id column")
    assert snapshot(tmp_path, exclude=job) == before
    assert not (job / "state").exists()  # refused before any slide was touched


@pytest.mark.realdata
def test_malformed_manifests_are_one_line_errors(tmp_path, gpfm_cli, cmu, tiny_encoder):
    cases = {
        "no_path_col.csv": ("slide_id,file\na,x.svs\n", "lacks column(s) path"),
        "empty_path.csv": ("slide_id,path\na,\n", "empty path"),
        "missing_file.csv": ("slide_id,path\na,nope.svs\n", "does not exist"),
        "dupes.csv": (f"slide_id,path\na,{cmu}\na,{cmu}\n", "dupes.csv:3: slide id 'a' repeats line 2"),
        "bad_mpp.csv": (f"slide_id,path,mpp\na,{cmu},abc\n", "not a number"),
        "absurd_mpp.csv": (f"slide_id,path,mpp\na,{cmu},500\n", "plausible range"),
        "latin1.csv": (None, "not UTF-8"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        if text is None:
            path.write_bytes("slide_id,path\nsl\xefde,x.svs\n".encode("latin-1"))
        else:
            path.write_text(text, encoding="utf-8")
        result = gpfm_cli(*extract_args(tiny_encoder, tmp_path / f"job_{name}", path))
        assert result.code == EXIT_INPUT, (name, result.err)
        assert_one_line_error(result, name, expected)


@pytest.mark.realdata
@pytest.mark.parametrize("option,value,expected", [
    ("--block-k", "0", "--block-k 0"), ("--workers", "-1", "--workers -1"), ("--batch-size", "0", "--batch-size 0"),
])
def test_absurd_options_touch_no_slide_and_do_not_stick(tmp_path, gpfm_cli, cmu, tiny_encoder, option, value,
                                                         expected):
    job = tmp_path / "job"
    bad = gpfm_cli(*extract_args(tiny_encoder, job, cmu), option, value)
    assert bad.code == EXIT_INPUT
    assert_one_line_error(bad, expected, "nothing was run")
    assert not (job / "state").exists()
    good = gpfm_cli(*extract_args(tiny_encoder, job, cmu))
    assert good.code == 0, good.err
    assert "done 1" in good.out


@pytest.mark.realdata
def test_truncated_empty_unsupported_and_renamed_slides_are_distinct(tmp_path, gpfm_cli, cmu, tiny_encoder):
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(cmu, folder / "good.svs")
    (folder / "truncated.svs").write_bytes(cmu.read_bytes()[: 1_000_000])
    (folder / "empty.svs").write_bytes(b"")
    (folder / "pdf.svs").write_bytes(b"%PDF-1.4\n" + b"x" * 5000)
    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(folder / "picture.png")
    (folder / "picture.png").rename(folder / "renamed.svs")
    job = tmp_path / "job"
    result = gpfm_cli(*extract_args(tiny_encoder, job, folder))
    assert result.code == EXIT_PARTIAL, result.err
    states = {p.stem: json.loads(p.read_text()) for p in (job / "state").glob("*.json")}
    assert states["good"]["status"] == "done"
    assert states["truncated"]["error_class"] == "TruncatedSlideError"
    assert "copy" in states["truncated"]["error"] and "truncated.svs" in states["truncated"]["error"]
    assert states["empty"]["error_class"] == "UnreadableSlideError" and "0 bytes" in states["empty"]["error"]
    assert states["pdf"]["error_class"] == "UnsupportedSlideError"
    assert states["renamed"]["error_class"] == "UnsupportedSlideError"
    for name in ("truncated", "empty", "pdf", "renamed"):
        assert f"FAILED {name}:" in result.out and "\n" not in states[name]["error"]
    # replacing the truncated file with a whole copy is picked up without --retry-failed
    shutil.copy(cmu, folder / "truncated.svs")
    rerun = gpfm_cli(*extract_args(tiny_encoder, job, folder))
    assert json.loads((job / "state" / "truncated.json").read_text())["status"] == "done", rerun.out


@pytest.mark.realdata
def test_a_replaced_slide_is_redone_not_skipped(tmp_path, gpfm_cli, cmu, tcga, tiny_encoder):
    from gpfm.wsi import read_coords
    from gpfm.wsi.readers.slide import file_fingerprint

    slide = tmp_path / "slides" / "case1.svs"
    slide.parent.mkdir()
    shutil.copy(cmu, slide)
    job = tmp_path / "job"
    first = gpfm_cli(*extract_args(tiny_encoder, job, slide), "--mpp", "0.5")
    assert first.code == 0 and "done 1" in first.out, first.err
    n_first = read_coords(job / FEATURES / "case1.h5")[0].shape[0]
    same = gpfm_cli(*extract_args(tiny_encoder, job, slide), "--mpp", "0.5")
    assert "skipped 1" in same.out  # unchanged: reused
    shutil.copy(tcga, slide)  # another scan under the same name
    second = gpfm_cli(*extract_args(tiny_encoder, job, slide), "--mpp", "0.5")
    assert second.code == 0 and "done 1" in second.out, second.out
    coords, attrs = read_coords(job / FEATURES / "case1.h5")
    assert coords.shape[0] != n_first
    assert attrs["slide_fingerprint"].split(":")[2] == file_fingerprint(slide).split(":")[2]
    state = json.loads((job / "state" / "case1.json").read_text())
    assert "changed" in state["note"]


def test_a_copy_that_loses_mtime_is_the_same_slide(tmp_path):
    from gpfm.wsi.readers.slide import file_fingerprint, same_slide_content

    a = tmp_path / "a.bin"
    a.write_bytes(os.urandom(3 << 20))
    recorded = file_fingerprint(a)
    os.utime(a, (1, 1))  # a copy without preserved mtimes
    assert same_slide_content(recorded, a)
    data = bytearray(a.read_bytes())
    data[10] ^= 0xFF  # header changed (a re-export)
    a.write_bytes(bytes(data))
    assert not same_slide_content(recorded, a)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    return proc.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB tmpfs (root only; skipped elsewhere), unmounted afterwards."""
    mount = tmp_path / "disk"
    if not _mount_tmpfs(mount, "1500k"):
        pytest.skip("needs root and tmpfs to simulate a full disk")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.realdata
@pytest.mark.slow
def test_disk_full_is_recorded_stops_the_batch_and_resumes(tmp_path, small_disk, gpfm_cli, cmu, tiny_encoder):
    slides = tmp_path / "slides"
    slides.mkdir()
    for i in range(8):
        (slides / f"s{i}.svs").symlink_to(cmu)
    job = small_disk / "job"
    result = gpfm_cli(*extract_args(tiny_encoder, job, slides))
    assert result.code == EXIT_ENVIRONMENT, (result.out, result.err)
    line = assert_one_line_error(result, "no space left on", "rerun")
    assert "batch stopped" in line
    states = [json.loads(p.read_text()) for p in (job / "state").glob("*.json")]
    failed = [s for s in states if s["status"] == "failed"]
    assert failed and all("no space left" in s["error"] for s in failed)
    assert len([s for s in states if s["status"] == "done"]) < 8
    assert not list(job.rglob("*.lock")) and not list(job.rglob("*.tmp-*"))  # nothing held, nothing half-written
    for done in (s for s in states if s["status"] == "done"):
        from gpfm.wsi import is_complete

        assert is_complete(Path(done["outputs"]["features"]["path"]))
    subprocess.run(["mount", "-o", "remount,size=40m", str(small_disk)], check=True)
    rerun = gpfm_cli(*extract_args(tiny_encoder, job, slides))
    assert rerun.code == 0, (rerun.out, rerun.err)
    states = [json.loads(p.read_text()) for p in (job / "state").glob("*.json")]
    assert len(states) == 8 and all(s["status"] == "done" for s in states)


@pytest.mark.realdata
def test_summarize_names_interrupted_and_never_started_slides(tmp_path, gpfm_cli, cmu, tiny_encoder):
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("a", "b", "c"):
        (slides / f"{name}.svs").symlink_to(cmu)
    job = tmp_path / "job"
    assert gpfm_cli(*extract_args(tiny_encoder, job, slides / "a.svs")).code == 0
    # a run killed while embedding b: its state says running, its lock names a dead process of this host
    state_a = json.loads((job / "state" / "a.json").read_text())
    state_b = {**state_a, "slide_id": "b", "status": "running", "stage": "embed", "run_id": "killed-run"}
    (job / "state" / "b.json").write_text(json.dumps(state_b))
    lock = job / FEATURES / "b.h5.lock"
    import socket

    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "run_id": "killed-run"}))
    report = gpfm_cli("wsi", "summarize", job, "--slides", slides)
    assert report.code == EXIT_PARTIAL
    assert "interrupted 1" in report.out and "never_started 1" in report.out and "done 1" in report.out
    assert "INTERRUPTED b" in report.out and "NEVER STARTED c" in report.out
    rerun = gpfm_cli(*extract_args(tiny_encoder, job, slides))
    assert rerun.code == 0, rerun.err
    assert gpfm_cli("wsi", "summarize", job, "--slides", slides).code == 0


@pytest.mark.realdata
@pytest.mark.slow
def test_kill_9_mid_slide_then_summarize_and_resume(tmp_path, gpfm_cli, cmu, tiny_encoder):
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("p", "q", "r"):
        (slides / f"{name}.svs").symlink_to(cmu)
    job = tmp_path / "job"
    env = dict(os.environ, GPFM_TEST_DELAY_S="0.3", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE.parent / "extract")]))
    child = subprocess.Popen([sys.executable, str(HERE.parent / "extract" / "run_extract.py"), str(job),
                              *map(str, sorted(slides.iterdir()))], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    running = job / "state" / "p.json"
    while time.time() < deadline:
        if running.is_file() and json.loads(running.read_text()).get("status") == "running":
            time.sleep(0.5)  # inside the embedding of p (0.3 s per batch)
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    report = gpfm_cli("wsi", "summarize", job, "--slides", slides)
    assert report.code == EXIT_PARTIAL
    assert "INTERRUPTED p" in report.out and "NEVER STARTED r" in report.out, report.out
    rerun = gpfm_cli(*extract_args(tiny_encoder, job, slides))
    assert rerun.code == 0 and "done 3" in rerun.out, (rerun.out, rerun.err)
