"""What happened to every slide of a job: done, failed, interrupted (a killed run), running, never started.

A state that says ``running`` is *interrupted* when no live process holds the slide's lock (the run was killed,
or its machine went away), and *running* while the lock is live. Slides of the job's list without any state
were never started.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gpfm.errors import GpfmError
from gpfm.extract.locks import DEFAULT_TTL_S, LockInfo, lock_path_for
from gpfm.extract.state import SlideState, load_all_states, write_summary_csv


class NotAJobError(GpfmError):
    """The folder is not a ``gpfm extract`` job directory."""


@dataclass
class JobReport:
    """The classified slides of one job directory."""

    job_dir: Path
    states: list[SlideState]
    interrupted: list[SlideState] = field(default_factory=list)
    running: list[SlideState] = field(default_factory=list)
    never_started: list[str] = field(default_factory=list)
    summary_csv: Path | None = None

    @property
    def counts(self) -> Counter[str]:
        """Status → number of slides, with interrupted / never started as their own statuses."""
        counts = Counter(s.status for s in self.states if s.status != "running")
        counts.update({"interrupted": len(self.interrupted), "running": len(self.running),
                       "never_started": len(self.never_started)})
        return Counter({k: v for k, v in counts.items() if v})

    @property
    def ok(self) -> bool:
        """True when every slide is done (or empty) and none is missing."""
        return not (self.interrupted or self.never_started or any(s.status == "failed" for s in self.states))

    def headline(self) -> str:
        """One line: slides per status and tiles embedded."""
        tiles = sum(s.n_tiles for s in self.states if s.status == "done")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"{len(self.states) + len(self.never_started)} slides: {counts}; {tiles} tiles embedded"

    def detail_lines(self) -> list[str]:
        """One line per slide that needs attention."""
        lines = [f"FAILED {s.slide_id} (stage {s.stage}): {s.error_class}: {s.error}"
                 for s in self.states if s.status == "failed"]
        lines += [f"INTERRUPTED {s.slide_id} (stage {s.stage}, run {s.run_id}): its run was killed; "
                  "rerun `gpfm extract` to finish it" for s in self.interrupted]
        lines += [f"RUNNING {s.slide_id} (stage {s.stage}, run {s.run_id})" for s in self.running]
        lines += [f"NEVER STARTED {sid}" for sid in self.never_started]
        return lines


def _lock_live(job_dir: Path, state: SlideState) -> bool:
    """True when a live holder keeps the lock of this slide's features file."""
    features = state.outputs.get("features", {}).get("path")
    candidates = [Path(features)] if features else []
    candidates += list(job_dir.glob(f"*/features_*/{state.slide_id}.h5"))
    candidates += [p.with_suffix("") for p in job_dir.glob(f"*/features_*/{state.slide_id}.h5.lock")]
    for final in candidates:
        info = LockInfo.read(lock_path_for(final))
        if info is not None and info.stale_reason(DEFAULT_TTL_S) is None:
            return True
    return False


def summarize_job(job_dir: str | Path, slides: list[str] | None = None, *, recursive: bool = False) -> JobReport:
    """Classify every slide of a job and rewrite ``summary.csv``.

    Args:
        job_dir: the job directory.
        slides: the job's slide list (as given to ``gpfm extract``) to find slides never started; optional.
        recursive: scan folders of ``slides`` recursively.

    Raises:
        NotAJobError: the folder holds no state files and no slide list was given.
    """
    job_dir = Path(job_dir)
    states = load_all_states(job_dir / "state")
    if not states and not slides:
        raise NotAJobError(f"{job_dir}: no state/*.json files; is this a `gpfm extract` job directory (--out)?")
    report = JobReport(job_dir, states)
    for s in states:
        if s.status == "running":
            (report.running if _lock_live(job_dir, s) else report.interrupted).append(s)
    if slides:
        from gpfm.extract.slides import collect_slides

        known = {s.slide_id for s in states}
        report.never_started = [e.slide_id for e in collect_slides(slides, recursive=recursive)
                                if e.slide_id not in known]
    if states:
        report.summary_csv = job_dir / "summary.csv"
        write_summary_csv(report.summary_csv, states)
    return report
