"""Published checksums of dataset archives, verified by the importers when the files are at hand.

Each entry: file name → (algorithm, digest, where it was published). An importer verifies every listed file it
finds in (or beside) its source; a mismatch is an error naming the file and both digests; a listed file that is
absent is reported ("not verified: the archive is not here") — the unpacked folder's counts are still checked.
"""

from __future__ import annotations

from pathlib import Path

from gpfm.errors import InputError
from gpfm.eval.importers.report import ImportReport
from gpfm.hashing import file_digest

_ZENODO_CRC = "Zenodo record 1214456 (as pinned by kaiko-ai/eva crc.py)"
_PCAM = "basveeling/pcam release (as pinned by kaiko-ai/eva patch_camelyon.py)"
PUBLISHED: dict[str, tuple[str, str, str]] = {
    "NCT-CRC-HE-100K.zip": ("md5", "035777cf327776a71a05c95da6d6325f", _ZENODO_CRC),
    "CRC-VAL-HE-7K.zip": ("md5", "2fd1651b4f94ebd818ebf90ad2b6ce06", _ZENODO_CRC),
    "camelyonpatch_level_2_split_train_x.h5": ("md5", "01844da899645b4d6f84946d417ba453", _PCAM),
    "camelyonpatch_level_2_split_train_y.h5": ("md5", "0781386bf6c2fb62d58ff18891466aca", _PCAM),
    "camelyonpatch_level_2_split_valid_x.h5": ("md5", "81cf9680f1724c40673f10dc88e909b1", _PCAM),
    "camelyonpatch_level_2_split_valid_y.h5": ("md5", "94d8aacc249253159ce2a2e78a86e658", _PCAM),
    "camelyonpatch_level_2_split_test_x.h5": ("md5", "2614b2e6717d6356be141d9d6dbfcb7e", _PCAM),
    "camelyonpatch_level_2_split_test_y.h5": ("md5", "11ed647efe9fe457a4eb45df1dba19ba", _PCAM),
}


def verify_published(names: list[str], folders: list[Path], report: ImportReport) -> None:
    """Verify each of ``names`` found in ``folders`` against its published checksum (see the module doc)."""
    for name in names:
        algorithm, digest, source = PUBLISHED[name]
        found = next((f / name for f in folders if (f / name).is_file()), None)
        if found is None:
            report.dropped.append(f"{name}: not here, so its published {algorithm} was not verified (the unpacked "
                                  "files were counted instead)")
            continue
        actual = file_digest(found, algorithm)
        if actual != digest:
            raise InputError(f"{found}: {algorithm} {actual} differs from the published {digest} ({source}); the "
                             "file is damaged or another release: download it again")
        report.found.append(f"{name}: {algorithm} matches the published {digest} ({source})")
