"""The user-facing error base class and the exit-code policy of every ``gpfm`` command.

Every error a user can fix derives from :class:`GpfmError`; its message is one line that names the file (or
option) and the fix. The command line turns a :class:`GpfmError` into ``error: <message>`` on stderr and the
error's :attr:`GpfmError.exit_code`; anything else is a bug and is reported as one line too (the traceback is
shown with ``GPFM_DEBUG=1``).

Exit codes (the same for every command):

====  =============================================================================================
0     everything asked for was done (or was already done)
1     the run finished, but some items failed (slides, benchmark runs); each is recorded with its reason
2     bad input or usage: a missing or malformed file, an unknown name, an impossible option value
3     the environment failed: no space left on a device, no permission to write; fix it and rerun
4     an unexpected internal error (a bug): rerun with ``GPFM_DEBUG=1`` and report the traceback
5     training diverged (NaN/inf loss or weights); the last good checkpoint is intact
130   interrupted (Ctrl-C / SIGINT); finished work is kept and a rerun resumes
====  =============================================================================================
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 4
EXIT_DIVERGED = 5
EXIT_INTERRUPTED = 130

#: errno values that mean "the disk (or quota) is full": retrying after freeing space succeeds.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class GpfmError(Exception):
    """An error the user can fix; the message is one line naming the file and the fix."""

    exit_code: int = EXIT_INPUT


class InputError(GpfmError, ValueError):
    """A file or value given by the user is missing, empty or malformed (exit code 2)."""


class EnvironmentFault(GpfmError):
    """The machine, not the input, stopped the work (disk full, no permission); a rerun after the fix resumes."""

    exit_code = EXIT_ENVIRONMENT


class DiskFullError(EnvironmentFault, OSError):
    """No space left on the device that holds an output; nothing partial was left under a final name."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:  # OSError would prefix "[Errno 28]"
        return str(self.strerror)


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError (or an HDF5 error text) that means the device or quota is full."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text


def disk_full_message(path: str | os.PathLike[str]) -> str:
    """One line for a full disk while writing ``path``."""
    folder = Path(path).parent
    return (f"no space left on {folder} while writing {Path(path).name}; free space there (or write to another "
            "--out) and rerun: finished outputs are kept and the run resumes")


@contextlib.contextmanager
def translate_disk_full(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn any disk-full failure while writing ``path`` into :class:`DiskFullError` (other errors pass)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise DiskFullError(disk_full_message(path)) from exc
        raise


def one_line(exc: BaseException, limit: int = 400) -> str:
    """The first line of an exception's message, at most ``limit`` characters (never empty)."""
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    if not first:
        first = type(exc).__name__
    return first if len(first) <= limit else first[: limit - 1] + "…"
