"""Dataset readers on the real public files, on hand-written samples of each format, and on bad records.

Counts are those of shared/data/text/README.md.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from gpfm.eval.text.readers import (
    RecordError,
    read_arch_captions,
    read_histgen_reports,
    read_patchgastric_captions,
    read_pathvqa,
    read_wsi_vqa,
    read_wsi_vqa_splits,
)
from tests.conftest import shared_path


def _write(tmp_path: Path, name: str, obj: object) -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


# ---------------------------------------------------------------- real files
@pytest.mark.realdata
def test_real_pathvqa_lxmert_and_raw_forms() -> None:
    lx = read_pathvqa(shared_path("text", "pathvqa", "pvqa_test_first67.json"), split="test")
    assert len(lx) == 210 and len({r.image_id for r in lx}) == 38
    assert sum(r.closed for r in lx) == 114
    assert Counter(r.answer for r in lx if r.closed) == {"yes": 57, "no": 57}
    assert lx[0].image_id == "test_0001" and lx[0].answer == "squamous cell carcinoma" and not lx[0].closed
    raw = read_pathvqa(shared_path("text", "pathvqa", "QA_pairs_vb_first200.json"))
    assert len(raw) == 200 and len({r.image_id for r in raw}) == 38
    assert sum(r.closed for r in raw) == 101 and sum(r.answer == "yes" for r in raw) == 52


@pytest.mark.realdata
def test_real_wsi_vqa_with_split_file() -> None:
    splits_csv = shared_path("text", "wsi_vqa", "splits_0.csv")
    recs = read_wsi_vqa(shared_path("text", "wsi_vqa", "WsiVQA_test.json"), splits_csv, split="test")
    assert len(recs) == 735 and len({r.image_id for r in recs}) == 86
    assert sum(r.closed for r in recs) == 390
    assert Counter(len(r.choices) for r in recs if r.closed) == {4: 388, 2: 2}
    assert all(r.answer in r.choices for r in recs if r.closed)
    table = read_wsi_vqa_splits(splits_csv)
    assert [sum(len(v) for v in table[s].values()) for s in ("train", "val", "test")] == [845, 98, 98]
    # The official split is by slide: one QA patient also has a val slide, so without split= it is ambiguous.
    with pytest.raises(RecordError, match=r"TCGA-D8-A73U.*\['val', 'test'\].*pass split="):
        read_wsi_vqa(shared_path("text", "wsi_vqa", "WsiVQA_test.json"), splits_csv)


@pytest.mark.realdata
def test_real_patchgastric_and_arch() -> None:
    caps = read_patchgastric_captions(shared_path("text", "patchgastric_adc22", "captions.csv"))
    assert len(caps) == 991 and len({c.text for c in caps}) == 239
    assert Counter(c.meta["subtype"] for c in caps)["Well differentiated tubular adenocarcinoma"] == 283
    books = read_arch_captions(shared_path("text", "arch", "books_set_captions_first200.json"))
    assert len(books) == 142 and sum(len(b.members) == 1 for b in books) == 117
    assert sum(len(b.members) for b in books) == 200 and not books[0].text.startswith(" ")
    pubmed = read_arch_captions(shared_path("text", "arch", "pubmed_set_captions_first200.json"))
    assert len(pubmed) == 200 and len({p.text for p in pubmed}) == 195


# ---------------------------------------------------------------- hand-written samples
def test_pathvqa_samples_and_errors(tmp_path: Path) -> None:
    good = [
        {
            "img_id": "train_0001",
            "sentf": {"pvqa": ["What is shown?", "Is it a tumour?"]},
            "labelf": {"pvqa": [{"granuloma": 1}, {"Yes": 1}]},
        },
        {"img_id": "train_0002", "sentf": {"pvqa": []}, "labelf": {"pvqa": []}},
    ]
    recs = read_pathvqa(_write(tmp_path, "pvqa.json", good), split="train")
    assert [(r.answer, r.closed, r.split) for r in recs] == [
        ("granuloma", False, "train"),
        ("Yes", True, "train"),
    ]
    raw = [{"Image_ID": "Fig.2", "Questions": "Is this  benign ?", "Answers": "no"}]
    assert read_pathvqa(_write(tmp_path, "raw.json", raw))[0].closed
    bad = [good[0], {"img_id": "x", "sentf": {"pvqa": ["Q?"]}, "labelf": {"pvqa": []}}]
    with pytest.raises(
        RecordError, match=r"bad\.json: record 1: field 'labelf\.pvqa': 0 answers for 1 questions"
    ):
        read_pathvqa(_write(tmp_path, "bad.json", bad))
    with pytest.raises(RecordError, match=r"raw_bad\.json: record 0: field 'Answers': missing"):
        read_pathvqa(_write(tmp_path, "raw_bad.json", [{"Image_ID": "F", "Questions": "Q?"}]))
    with pytest.raises(ValueError, match=r"nojson\.json: not valid JSON"):
        read_pathvqa(_write(tmp_path, "nojson.json", "[{"))


def test_wsi_vqa_samples_and_errors(tmp_path: Path) -> None:
    splits = _write(
        tmp_path,
        "splits.csv",
        ",train,val,test\n0,TCGA-AA-0001-01Z-00-DX1.X,TCGA-AA-0002-01Z-00-DX1.Y,"
        "TCGA-AA-0003-01Z-00-DX1.Z\n1,TCGA-AA-0004-01Z-00-DX1.W,,\n",
    )
    good = [
        {
            "Id": "TCGA-AA-0001",
            "Question": "what is the diagnosis?",
            "Choice": ["idc", "ilc"],
            "Answer": "ilc",
        },
        {"Id": "TCGA-AA-0003", "Question": "please predict er status?", "Answer": "positive"},
    ]
    recs = read_wsi_vqa(_write(tmp_path, "wsivqa.json", good), splits)
    assert [(r.split, r.closed, r.choices) for r in recs] == [
        ("train", True, ("idc", "ilc")),
        ("test", False, ()),
    ]
    with pytest.raises(RecordError, match=r"record 0: field 'Answer': 'lcis' is not one of the choices"):
        read_wsi_vqa(_write(tmp_path, "b1.json", [{**good[0], "Answer": "lcis"}]))
    with pytest.raises(RecordError, match=r"record 1: field 'Question': expected a non-empty string"):
        read_wsi_vqa(_write(tmp_path, "b2.json", [good[0], {**good[1], "Question": ""}]))
    with pytest.raises(
        RecordError, match=r"record 0: field 'Id': patient 'TCGA-AA-9999' has no slide in the"
    ):
        read_wsi_vqa(_write(tmp_path, "b3.json", [{**good[1], "Id": "TCGA-AA-9999"}]), splits, split="test")


def test_histgen_report_json_sample_and_errors(tmp_path: Path) -> None:
    sample = {
        "train": [
            {"id": "TCGA-AA-0001-01Z-00-DX1", "report": "Invasive ductal carcinoma, grade 2. Margins clear."}
        ],
        "val": [{"id": "TCGA-AA-0002-01Z-00-DX1", "report": "Lobular carcinoma in situ."}],
        "test": [
            {"id": "TCGA-AA-0003-01Z-00-DX1", "report": "Benign breast tissue with fibrocystic change."}
        ],
    }
    recs = read_histgen_reports(_write(tmp_path, "annotation.json", sample))
    assert [(r.id[:12], r.split) for r in recs] == [
        ("TCGA-AA-0001", "train"),
        ("TCGA-AA-0002", "val"),
        ("TCGA-AA-0003", "test"),
    ]
    broken = {**sample, "test": [{"id": "TCGA-AA-0003", "text": "wrong key"}]}
    with pytest.raises(RecordError, match=r"record test\[0\]: field 'report': missing"):
        read_histgen_reports(_write(tmp_path, "broken.json", broken))
    with pytest.raises(ValueError, match=r"unknown split key\(s\) \['training'\]"):
        read_histgen_reports(_write(tmp_path, "keys.json", {**sample, "training": []}))
    dup = {"train": sample["train"] * 2}
    with pytest.raises(RecordError, match="duplicate id"):
        read_histgen_reports(_write(tmp_path, "dup.json", dup))


def test_patchgastric_and_arch_samples_and_errors(tmp_path: Path) -> None:
    csv_text = 'id,subtype,text\nabc,Papillary adenocarcinoma,"Papillary growth, papillary adenocarcinoma."\n'
    caps = read_patchgastric_captions(_write(tmp_path, "captions.csv", csv_text))
    assert caps[0].text == "Papillary growth, papillary adenocarcinoma." and caps[0].meta[
        "subtype"
    ].startswith("Pap")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['text'\]"):
        read_patchgastric_captions(_write(tmp_path, "c2.csv", "id,subtype,caption\na,b,c\n"))
    with pytest.raises(RecordError, match=r"c3\.csv: record 1: field 'text'"):
        read_patchgastric_captions(_write(tmp_path, "c3.csv", "id,subtype,text\na,s,t\nb,s,\n"))
    books = {
        "0": {"figure_id": "00", "letter": "A", "caption": " Cap (A), (B).", "uuid": "u1"},
        "1": {"figure_id": "00", "letter": "B", "caption": " Cap (A), (B).", "uuid": "u2"},
        "2": {"figure_id": "01", "letter": "Single", "caption": " Other.", "uuid": "u3"},
    }
    bags = read_arch_captions(_write(tmp_path, "books.json", books))
    assert [(b.id, b.members, b.text) for b in bags] == [
        ("00", ("u1", "u2"), "Cap (A), (B)."),
        ("01", ("u3",), "Other."),
    ]
    books["1"]["caption"] = "different"
    with pytest.raises(
        RecordError, match=r"record 1: field 'caption': differs from the caption of figure 00"
    ):
        read_arch_captions(_write(tmp_path, "books_bad.json", books))
