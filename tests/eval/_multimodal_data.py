"""Templated captions and questions on the real LC25000 features (shared by the VQA and report tests).

Splits are by sha256 group (the LC25000 sample has no byte-identical duplicates after de-duplication, so a
group is one image; near-duplicates from LC25000's rotations may still straddle splits - see the data README).
"""

from __future__ import annotations

import hashlib

import numpy as np

from gpfm.eval.text.readers import TextRecord, VqaRecord

CAPTIONS = {
    "lung_aca": [
        "lung adenocarcinoma with malignant glands.",
        "lung adenocarcinoma showing atypical gland formation.",
        "invasive adenocarcinoma of the lung with glandular growth.",
    ],
    "lung_n": [
        "benign lung tissue with normal alveoli.",
        "benign lung parenchyma without tumour.",
        "normal lung tissue with thin alveolar walls.",
    ],
    "lung_scc": [
        "squamous cell carcinoma with keratinizing nests.",
        "squamous cell carcinoma of the lung with keratin pearls.",
        "invasive squamous cell carcinoma with intercellular bridges.",
    ],
}
DIAGNOSIS = {"lung_aca": "adenocarcinoma", "lung_n": "benign", "lung_scc": "squamous cell carcinoma"}
CLOSED_QUESTIONS = {
    "lung_aca": ["is this lung adenocarcinoma?", "are there malignant glands?"],
    "lung_n": ["is this tissue benign?", "is the lung tissue normal?"],
    "lung_scc": ["is this squamous cell carcinoma?", "are keratinizing nests present?"],
}
OPEN_QUESTIONS = ["what is the diagnosis?", "what type of lesion is shown?"]


def _unit(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def lc25000_split(sha: str) -> str:
    """Train 60% / val 15% / test 25% by sha256 group."""
    u = _unit("split:" + sha)
    return "train" if u < 0.60 else "val" if u < 0.75 else "test"


def bags_and_labels(feats: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[tuple[str, str, str]]]:
    """Bags of one tile keyed by sha256, and (id, label name, split) per tile."""
    names = feats["label_names"]
    bags = {sha: feats["features"][i : i + 1] for i, sha in enumerate(feats["sha256"])}
    items = [
        (sha, str(names[lab]), lc25000_split(sha))
        for sha, lab in zip(feats["sha256"], feats["labels"], strict=True)
    ]
    return bags, items


def caption_records(items: list[tuple[str, str, str]]) -> list[TextRecord]:
    """One templated caption per tile; the variant is a seeded function of the tile."""
    out = []
    for sha, label, split in items:
        variants = CAPTIONS[label]
        out.append(TextRecord(sha, variants[int(_unit("cap:" + sha) * len(variants))], split, group=sha))
    return out


def vqa_records(items: list[tuple[str, str, str]]) -> list[VqaRecord]:
    """Three templated questions per tile.

    Two closed questions (one about its own class -> yes, one about another class -> no, chosen by a seeded
    draw) and one open question (answer = the diagnosis).
    """
    out = []
    labels = list(CAPTIONS)
    for sha, label, split in items:
        own = CLOSED_QUESTIONS[label][int(_unit("own:" + sha) * 2)]
        other_label = [lab for lab in labels if lab != label][int(_unit("oth:" + sha) * 2)]
        other = CLOSED_QUESTIONS[other_label][int(_unit("oq:" + sha) * 2)]
        open_q = OPEN_QUESTIONS[int(_unit("open:" + sha) * 2)]
        out += [
            VqaRecord(sha, own, "yes", True, split=split, group=sha),
            VqaRecord(sha, other, "no", True, split=split, group=sha),
            VqaRecord(sha, open_q, DIAGNOSIS[label], False, split=split, group=sha),
        ]
    return out
