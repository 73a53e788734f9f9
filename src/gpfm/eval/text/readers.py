"""Readers for the public VQA, report and caption formats users bring, into two plain record types.

Formats (each reader names the file, record index and field of the first malformed record it meets):

* PathVQA, LXMERT form (``pvqa_{train,val,test}.json``): ``[{"img_id", "sentf": {"pvqa": [question…]},
  "labelf": {"pvqa": [{answer: score}…]}}]``; records with no questions are allowed (the official files have
  them) and yield nothing. The answer is the highest-scoring key.
* PathVQA, raw form (``QA_pairs_*.json``): ``[{"Image_ID", "Questions", "Answers"}]``.
* WSI-VQA (``WsiVQA_{split}.json``): ``[{"Id", "Question", "Answer", "Choice"?}]``; a record with ``Choice``
  is close-ended and its answer must be one of the choices. ``splits_0.csv`` (columns ``train,val,test`` of
  slide names) maps a patient to a split by the first 12 characters (the TCGA patient barcode).
* HistGen report JSON: ``{"train": [{"id", "report"}…], "val": […], "test": […]}``.
* PatchGastricADC22 ``captions.csv``: ``id,subtype,text`` (one caption per slide).
* ARCH ``captions.json``: ``{"0": {"caption", "uuid", "figure_id"?, "letter"?}…}``. books_set rows sharing a
  ``figure_id`` form one bag with one caption; pubmed_set rows are one image each.

Questions are *closed* when the answer is ``yes``/``no`` (PathVQA) or when choices are given (WSI-VQA).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gpfm.errors import GpfmError

SPLITS = ("train", "val", "test")
YES_NO = frozenset({"yes", "no"})


class RecordError(GpfmError, ValueError):
    """A malformed record: the message names the file, the record index and the field."""

    def __init__(self, path: str | Path, index: int | str, field_name: str, problem: str) -> None:
        super().__init__(f"{path}: record {index}: field {field_name!r}: {problem}")


@dataclass(frozen=True)
class VqaRecord:
    """One question about one image or slide.

    Attributes:
        image_id: id of the image/slide/patient whose features answer the question.
        question: question text as given.
        answer: answer text as given (normalised by the protocol, not here).
        closed: close-ended (yes/no or multiple choice) vs open-ended.
        choices: the allowed answers of a multiple-choice question (empty otherwise).
        split: ``train``/``val``/``test`` or None when the source has no split.
        group: id that must not straddle splits (defaults to ``image_id``; e.g. a near-duplicate group).
    """

    image_id: str
    question: str
    answer: str
    closed: bool
    choices: tuple[str, ...] = ()
    split: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class TextRecord:
    """One report or caption for one image, bag or slide.

    Attributes:
        id: id of the image/bag/slide whose features the text describes.
        text: the report or caption.
        split: ``train``/``val``/``test`` or None when the source has no split.
        group: id that must not straddle splits (defaults to ``id``).
        members: image ids of a multi-image bag (ARCH books figures); empty when ``id`` is itself the image.
        meta: extra source fields (e.g. ``subtype``).
    """

    id: str
    text: str
    split: str | None = None
    group: str | None = None
    members: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def _text(path: Path, index: int | str, rec: Any, key: str, *, allow_empty: bool = False) -> str:
    if not isinstance(rec, dict):
        raise RecordError(path, index, key, f"record is a {type(rec).__name__}, expected an object")
    if key not in rec:
        raise RecordError(path, index, key, f"missing (record has {', '.join(map(str, rec)) or 'no fields'})")
    value = rec[key]
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise RecordError(path, index, key, f"expected a non-empty string, got {value!r}")
    return value


def _list(path: Path, data: Any, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {what}, got {type(data).__name__}")
    return data


def read_pathvqa(path: str | Path, split: str | None = None) -> list[VqaRecord]:
    """PathVQA records from either the LXMERT (``img_id``/``sentf``/``labelf``) or the raw QA-pairs form."""
    path = Path(path)
    data = _list(path, _load_json(path), "PathVQA records")
    if data and isinstance(data[0], dict) and "Image_ID" in data[0]:
        return [_raw_pathvqa(path, i, rec, split) for i, rec in enumerate(data)]
    out: list[VqaRecord] = []
    for i, rec in enumerate(data):
        image_id = _text(path, i, rec, "img_id")
        questions = _nested_list(path, i, rec, "sentf")
        labels = _nested_list(path, i, rec, "labelf")
        if len(questions) != len(labels):
            raise RecordError(path, i, "labelf.pvqa", f"{len(labels)} answers for {len(questions)} questions")
        for j, (question, label) in enumerate(zip(questions, labels, strict=True)):
            if not isinstance(question, str) or not question.strip():
                raise RecordError(
                    path, i, f"sentf.pvqa[{j}]", f"expected a question string, got {question!r}"
                )
            if not isinstance(label, dict) or not label:
                raise RecordError(path, i, f"labelf.pvqa[{j}]", f"expected {{answer: score}}, got {label!r}")
            answer = max(label, key=lambda k: (label[k], k))
            out.append(VqaRecord(image_id, question, answer, answer.strip().lower() in YES_NO, split=split))
    return out


def _nested_list(path: Path, index: int, rec: dict[str, Any], key: str) -> list[Any]:
    inner = rec.get(key)
    if not isinstance(inner, dict) or not isinstance(inner.get("pvqa"), list):
        raise RecordError(path, index, f"{key}.pvqa", f"expected {{'pvqa': [...]}}, got {inner!r}")
    return inner["pvqa"]


def _raw_pathvqa(path: Path, index: int, rec: Any, split: str | None) -> VqaRecord:
    image_id = _text(path, index, rec, "Image_ID")
    question = _text(path, index, rec, "Questions")
    answer = _text(path, index, rec, "Answers")
    return VqaRecord(image_id, question, answer, answer.strip().lower() in YES_NO, split=split)


def read_wsi_vqa(
    path: str | Path, splits_csv: str | Path | None = None, split: str | None = None
) -> list[VqaRecord]:
    """WSI-VQA records, with their split.

    Args:
        path: a ``WsiVQA_*.json`` file.
        splits_csv: optional ``splits_0.csv``; each record's patient must then have a slide in ``split`` (when
            given) or in exactly one split column (when ``split`` is None).
        split: the split every record of this file belongs to (the official files are one per split).
    """
    path = Path(path)
    data = _list(path, _load_json(path), "WSI-VQA records")
    table = read_wsi_vqa_splits(splits_csv) if splits_csv is not None else None
    out: list[VqaRecord] = []
    for i, rec in enumerate(data):
        image_id = _text(path, i, rec, "Id")
        question = _text(path, i, rec, "Question")
        answer = _text(path, i, rec, "Answer")
        choices: tuple[str, ...] = ()
        if "Choice" in rec:
            raw = rec["Choice"]
            if not isinstance(raw, list) or len(raw) < 2 or not all(isinstance(c, str) for c in raw):
                raise RecordError(path, i, "Choice", f"expected a list of >= 2 option strings, got {raw!r}")
            if answer not in raw:
                raise RecordError(path, i, "Answer", f"{answer!r} is not one of the choices {raw}")
            choices = tuple(raw)
        rec_split = split
        if table is not None:
            found = [s for s in SPLITS if image_id[:12] in table[s]]
            if split is not None and split not in found:
                raise RecordError(
                    path,
                    i,
                    "Id",
                    f"patient {image_id[:12]!r} has no slide in the {split!r} "
                    f"column of {splits_csv} (found in {found or 'none'})",
                )
            if split is None and len(found) != 1:
                raise RecordError(
                    path,
                    i,
                    "Id",
                    f"patient {image_id[:12]!r} is in split(s) {found} of "
                    f"{splits_csv}; pass split= to say which this file is",
                )
            rec_split = split or found[0]
        out.append(VqaRecord(image_id, question, answer, bool(choices), choices, rec_split, image_id[:12]))
    return out


def read_wsi_vqa_splits(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """Split → patient barcode (first 12 characters of a slide name) → slide names, from ``splits_0.csv``.

    The official WSI-VQA split is by slide, not by patient: a few patients have slides in two splits, so a
    patient can appear under more than one split here.
    """
    path = Path(path)
    out: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    try:
        fh = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    with fh:
        reader = csv.DictReader(fh)
        missing = [s for s in SPLITS if s not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing split column(s) {missing}; expected columns ',train,val,test'")
        for row in reader:
            for split_name in SPLITS:
                slide = (row.get(split_name) or "").strip()
                if slide:
                    out[split_name].setdefault(slide[:12], []).append(slide)
    return out


def read_histgen_reports(path: str | Path) -> list[TextRecord]:
    """HistGen-style ``{"train": [{"id", "report"}], "val": [...], "test": [...]}`` report JSON."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or not set(data) & set(SPLITS):
        raise ValueError(f"{path}: expected an object with keys among {SPLITS}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SPLITS))
    if unknown:
        raise ValueError(f"{path}: unknown split key(s) {unknown}; expected {SPLITS}")
    out: list[TextRecord] = []
    for split_name in SPLITS:
        for i, rec in enumerate(_list(path, data.get(split_name, []), f"{split_name} reports")):
            where = f"{split_name}[{i}]"
            out.append(
                TextRecord(_text(path, where, rec, "id"), _text(path, where, rec, "report"), split_name)
            )
    _refuse_duplicate_ids(path, out)
    return out


def read_patchgastric_captions(path: str | Path) -> list[TextRecord]:
    """PatchGastricADC22 ``captions.csv`` (``id,subtype,text``): one caption per slide, no split."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("id", "subtype", "text") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected header 'id,subtype,text'")
        out = [
            TextRecord(
                _text(path, i, row, "id"), _text(path, i, row, "text"), meta={"subtype": row["subtype"]}
            )
            for i, row in enumerate(reader)
        ]
    _refuse_duplicate_ids(path, out)
    return out


def read_arch_captions(path: str | Path) -> list[TextRecord]:
    """ARCH ``captions.json``: one record per books figure (bag) or pubmed image; leading spaces stripped."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by row number, got {type(data).__name__}")
    bags: dict[str, TextRecord] = {}
    for key, rec in data.items():
        caption = _text(path, key, rec, "caption").strip()
        uuid = _text(path, key, rec, "uuid")
        if "figure_id" not in rec:
            bags[uuid] = TextRecord(uuid, caption, members=(uuid,))
            continue
        figure = _text(path, key, rec, "figure_id")
        if figure in bags:
            if bags[figure].text != caption:
                raise RecordError(path, key, "caption", f"differs from the caption of figure {figure}")
            bags[figure] = replace(bags[figure], members=(*bags[figure].members, uuid))
        else:
            bags[figure] = TextRecord(figure, caption, members=(uuid,))
    return list(bags.values())


def _refuse_duplicate_ids(path: Path, records: Iterable[TextRecord]) -> None:
    seen: set[str] = set()
    for i, rec in enumerate(records):
        if rec.id in seen:
            raise RecordError(path, i, "id", f"duplicate id {rec.id!r}")
        seen.add(rec.id)


READERS = {
    "pathvqa": read_pathvqa,
    "wsi_vqa": read_wsi_vqa,
    "histgen": read_histgen_reports,
    "patchgastric": read_patchgastric_captions,
    "arch": read_arch_captions,
}
