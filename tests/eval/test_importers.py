"""``gpfm bench-import``: the files labs already have → the suite layout (real GPFM files + faithful replicas)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gpfm.eval.importers import IMPORTERS
from gpfm.eval.importers.gpfm_repo import SLIDE_TASKS, SURVIVAL_TASKS
from tests.conftest import shared_path
from tests.faults._helpers import assert_one_line_error, gpfm_cli  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def gpfm_repo() -> Path:
    return shared_path("splits", "gpfm-4f8be2b")


@pytest.mark.realdata
def test_gpfm_repository_files_become_every_slide_and_survival_table(gpfm_repo, tmp_path, gpfm_cli):
    res = gpfm_cli("bench-import", "gpfm-repo", gpfm_repo, "--data-root", tmp_path, "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert set(report["written"]) == {f"wsi/{t}.csv" for t in SLIDE_TASKS} | {f"survival/{t}.csv" for t in
                                                                             SURVIVAL_TASKS} | {
        "survival/TCGA-LUAD+CPTAC-LUAD.csv"}
    for rel, digest in report["written"].items():
        assert hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest() == digest
    # BRACS-7 against the source files themselves: every split slide, with its label and side
    ours = pd.read_csv(tmp_path / "wsi" / "BRACS-7.csv", dtype=str).set_index("slide_id")
    split = pd.read_csv(gpfm_repo / "splits712" / "BRACS_100" / "splits_0.csv", dtype=str)
    labels = pd.read_csv(gpfm_repo / "dataset_csv" / "BRACS.csv", dtype=str).set_index("slide_id")
    for part in ("train", "val", "test"):
        ids = split[part].dropna()
        assert (ours.loc[ids, "split"] == part).all()
        assert (ours.loc[ids, "label"] == labels.loc[ids, "label"]).all()
    assert len(ours) == split[["train", "val", "test"]].count().sum() and ours["label"].nunique() == 7
    # PANDA keeps its val/test: the repository's exclude_list holds exactly those (kept out of pretraining)
    panda = pd.read_csv(tmp_path / "wsi" / "PANDA.csv")
    assert panda["split"].value_counts().to_dict() == {"train": 7143, "test": 2040, "val": 1019}
    # survival: each case held out in exactly the fold where GPFM marks it 'val'; slide ids are file stems
    surv = pd.read_csv(tmp_path / "survival" / "TCGA-BLCA.csv")
    src = pd.read_csv(gpfm_repo / "dataset_csv" / "survival_by_case" / "TCGA_BLCA_Splits.csv")
    row = src.iloc[0]
    held = [k for k in range(5) if row[f"Fold {k}"] == "val"]
    mine = surv[surv["case_id"] == row["case_id"]]
    assert held == [int(mine["fold"].iloc[0])] and mine["slide_id"].iloc[0] == Path(row["slide_id"]).stem
    assert set(surv["fold"]) == {0, 1, 2, 3, 4} and not surv["slide_id"].str.contains("/").any()
    assert surv.groupby("case_id")["fold"].nunique().max() == 1
    # CPTAC-LUAD is GPFM's external survival cohort: one row per slide, no folds
    cptac = pd.read_csv(tmp_path / "survival" / "CPTAC-LUAD.csv")
    assert "fold" not in cptac and cptac["case_id"].nunique() < len(cptac)
    external = pd.read_csv(tmp_path / "survival" / "TCGA-LUAD+CPTAC-LUAD.csv")  # GPFM's external task
    tcga = pd.read_csv(tmp_path / "survival" / "TCGA-LUAD.csv")
    assert (external["split"] == "test").sum() == len(cptac)
    assert (external["split"] == "val").sum() == (tcga["fold"] == 0).sum()
    # the same import again is a no-op; an edited table is never overwritten silently
    assert gpfm_cli("bench-import", "gpfm-repo", gpfm_repo, "--data-root", tmp_path).code == 0
    edited = tmp_path / "wsi" / "BRACS-3.csv"
    edited.write_text(edited.read_text() + "x,y,z,train\n")
    res = gpfm_cli("bench-import", "gpfm-repo", gpfm_repo, "--data-root", tmp_path)
    assert res.code == 2
    assert_one_line_error(res, str(edited), "--overwrite")


def _clam_replica(root: Path, n: int = 30, folds: int = 1) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    slides = [f"S{i:03d}" for i in range(n)]
    labels = root / "labels.csv"
    pd.DataFrame({"case_id": [f"C{i // 2:03d}" for i in range(n)], "slide_id": slides,
                  "label": rng.choice(["a", "b"], n)}).to_csv(labels, index=False)
    split_dir = root / "splits"
    split_dir.mkdir()
    for k in range(folds):
        order = rng.permutation(slides)
        train, val, test = order[: n * 7 // 10], order[n * 7 // 10: n * 8 // 10], order[n * 8 // 10:]
        table = pd.DataFrame({"train": pd.Series(train), "val": pd.Series(val), "test": pd.Series(test)})
        table.to_csv(split_dir / f"splits_{k}.csv")
        table.notna().to_csv(split_dir / f"splits_{k}_bool.csv")  # the twin CLAM writes; must be ignored
    return split_dir, labels


def test_clam_split_folder_with_folds(tmp_path, gpfm_cli):
    split_dir, labels = _clam_replica(tmp_path, folds=3)
    out = tmp_path / "data"
    res = gpfm_cli("bench-import", "clam", split_dir, "--task", "MY-TASK", "--labels", labels, "--data-root", out)
    assert res.code == 0, res.err
    table = pd.read_csv(out / "wsi" / "MY-TASK.csv")
    assert list(table.columns) == ["slide_id", "case_id", "label", "split", "fold_0", "fold_1", "fold_2"]
    assert (table["split"] == table["fold_0"]).all() and len(table) == 30
    assert "3 folds" in res.out


def test_clam_slide_on_two_sides_is_refused(tmp_path, gpfm_cli):
    split_dir, labels = _clam_replica(tmp_path)
    bad = pd.read_csv(split_dir / "splits_0.csv", index_col=0)
    bad.loc[0, "test"] = bad.loc[0, "train"]
    bad.to_csv(split_dir / "splits_0.csv")
    res = gpfm_cli("bench-import", "clam", split_dir, "--task", "T", "--labels", labels, "--data-root", tmp_path)
    assert res.code == 2
    assert_one_line_error(res, "splits_0.csv", bad.loc[0, "train"])


def test_patho_bench_task_folder(tmp_path, gpfm_cli):
    task = tmp_path / "pb" / "cptac_ccrcc" / "BAP1_mutation"
    task.mkdir(parents=True)
    rows = [{"case_id": f"C{i}", "slide_id": f"C{i}-s{j}", "BAP1_mutation": str(i % 2),
             **{f"fold_{k}": "test" if (i + k) % 5 == 0 else "train" for k in range(5)}}
            for i in range(20) for j in range(2)]
    pd.DataFrame(rows).to_csv(task / "k=all.tsv", sep="\t", index=False)
    (task / "config.yaml").write_text("task_col: BAP1_mutation\nsample_col: case_id\nextra_cols: []\n"
                                      "label_dict: {'0': 0, '1': 1}\nmetrics: [macro-ovr-auc]\n")
    res = gpfm_cli("bench-import", "patho-bench", tmp_path / "pb", "--data-root", tmp_path / "d")
    assert res.code == 0, res.err
    table = pd.read_csv(tmp_path / "d" / "wsi" / "cptac_ccrcc-BAP1_mutation.csv")
    assert len(table) == 40 and [c for c in table.columns if c.startswith("fold_")] == [f"fold_{k}" for k in
                                                                                        range(5)]
    assert "no validation set" in res.out
    assert table.groupby("case_id")["fold_0"].nunique().max() == 1


def _write_tile(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def test_crc100k_archive_layout_keeps_the_official_split(tmp_path, gpfm_cli):
    src = tmp_path / "downloads"
    seed = 0
    for folder, per_class in (("NCT-CRC-HE-100K", 3), ("CRC-VAL-HE-7K", 2)):
        for cls in ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"):
            for i in range(per_class):
                seed += 1
                _write_tile(src / folder / cls / f"{cls}-{seed:05d}.tif", seed)
    out = tmp_path / "data"
    res = gpfm_cli("bench-import", "crc-100k", src, "--data-root", out)
    assert res.code == 0, res.err
    table = pd.read_csv(out / "roi" / "CRC-100K" / "labels.csv")
    assert table["split"].value_counts().to_dict() == {"train": 27, "test": 18}
    assert all((out / "roi" / "CRC-100K" / p).is_file() for p in table["path"])  # relative paths resolve
    assert "published release has 100000" in res.out  # a partial copy is said, not hidden


def test_crc100k_missing_folder_says_where_to_get_it(tmp_path, gpfm_cli):
    res = gpfm_cli("bench-import", "crc-100k", tmp_path, "--data-root", tmp_path / "d")
    assert res.code == 1 and "Zenodo record 1214456" in res.out


def test_mhist_annotations(tmp_path, gpfm_cli):
    src = tmp_path / "mhist"
    names = [f"MHIST_{i:03d}.png" for i in range(12)]
    for i, n in enumerate(names):
        _write_tile(src / "images" / n, i)
    pd.DataFrame({"Image Name": names, "Majority Vote Label": ["HP", "SSA"] * 6,
                  "Number of Annotators who Selected SSA (Out of 7)": [1] * 12,
                  "Partition": ["train"] * 8 + ["test"] * 4}).to_csv(src / "annotations.csv", index=False)
    res = gpfm_cli("bench-import", "mhist", src, "--data-root", tmp_path / "d")
    assert res.code == 0, res.err
    table = pd.read_csv(tmp_path / "d" / "roi" / "MHIST" / "labels.csv")
    assert table["split"].value_counts().to_dict() == {"train": 8, "test": 4}
    assert set(table["label"]) == {"HP", "SSA"}


@pytest.mark.realdata
def test_class_folders_split_never_separates_identical_images(tmp_path, gpfm_cli):
    lung = shared_path("patches", "lc25000_lung_224")
    res = gpfm_cli("bench-import", "class-folders", lung, "--name", "LC25000", "--data-root", tmp_path)
    assert res.code == 0, res.err
    table = pd.read_csv(tmp_path / "roi" / "LC25000" / "labels.csv")
    assert len(table) == 900 and table.groupby("group")["split"].nunique().max() == 1
    assert 0.25 < (table["split"] == "test").mean() < 0.35 and "NO official split" in res.out


def test_every_importer_is_documented():
    doc = (Path(__file__).parents[2] / "docs" / "benchmark.md").read_text()
    for name in IMPORTERS.names():
        assert f"`{name}`" in doc, name


@pytest.mark.realdata
def test_shipped_tcga_folds_regenerate_byte_for_byte_from_public_tables(tmp_path):
    from gpfm.eval.importers.tcga_survival import case_table, make_case_folds, shipped_folds_path

    tables = shared_path("tables", "survpath_tcga")
    for table_path in sorted(tables.glob("tcga_*.csv")):
        cohort = table_path.stem.removeprefix("tcga_")
        table = case_table(pd.read_csv(table_path), table_path)
        fresh = make_case_folds(table.drop_duplicates("case_id"))
        assert fresh.to_csv(index=False, lineterminator="\n") == shipped_folds_path(cohort).read_text(), cohort
        merged = table.drop_duplicates("case_id").merge(fresh, on="case_id")
        events = merged[merged["censorship"] == 0].groupby("fold").size()
        assert len(events) == 5 and events.max() - events.min() <= 2, (cohort, events.to_dict())  # stratified
        assert merged.groupby("fold").size().max() - merged.groupby("fold").size().min() <= 2


@pytest.mark.realdata
def test_tcga_survival_import_uses_the_verified_shipped_folds(tmp_path, gpfm_cli):
    from gpfm.eval.data.bags import load_survival_task  # noqa: F401 - the table is what that loader reads

    brca = shared_path("tables", "survpath_tcga", "tcga_brca.csv")
    res = gpfm_cli("bench-import", "tcga-survival", brca, "--cohort", "BRCA", "--data-root", tmp_path)
    assert res.code == 0 and "shipped folds" in res.out and "sha256 verified" in res.out, res.err
    table = pd.read_csv(tmp_path / "survival" / "TCGA-BRCA.csv")
    assert len(table) == 931 and table["case_id"].nunique() == 871 and set(table["fold"]) == set(range(5))
    assert table.groupby("case_id")["fold"].nunique().max() == 1 and not table["slide_id"].str.endswith(".svs").any()
    # a GDC clinical export (one row per treatment, '-- for missing) becomes one case row each, folds generated
    gdc = shared_path("tables", "histolab", "tcga_luad_clinical_example.csv")
    res = gpfm_cli("bench-import", "tcga-survival", gdc, "--cohort", "LUAD", "--data-root", tmp_path)
    assert res.code == 0 and "folds generated" in res.out
    luad = pd.read_csv(tmp_path / "survival" / "TCGA-LUAD.csv")
    row = luad[luad["case_id"] == "TCGA-97-8174"].iloc[0]  # Dead, 164 days to death
    assert row["censorship"] == 0 and abs(row["survival_months"] - 164 / 30.4375) < 1e-9


def test_a_damaged_shipped_split_is_refused(monkeypatch, tmp_path):
    from gpfm.eval.importers import tcga_survival

    fake = tmp_path / "tcga_x_survival_folds.csv"
    fake.write_text("case_id,fold\nTCGA-00-0000,0\n")
    monkeypatch.setattr(tcga_survival, "shipped_folds_path", lambda cohort: fake)
    with pytest.raises(Exception, match="differs from SHA256SUMS"):
        tcga_survival.load_shipped_folds("X")


def test_bach_photos_layout(tmp_path, gpfm_cli):
    src = tmp_path / "ICIAR2018_BACH_Challenge" / "Photos"
    for k, cls in enumerate(("Benign", "InSitu", "Invasive", "Normal")):
        for i in range(5):
            _write_tile(src / cls / f"{cls[:2].lower()}{i:03d}.tif", 10 * k + i)
    res = gpfm_cli("bench-import", "bach", tmp_path, "--data-root", tmp_path / "d")
    assert res.code == 0, res.err
    table = pd.read_csv(tmp_path / "d" / "roi" / "BACH" / "labels.csv")
    assert len(table) == 20 and set(table["label"]) == {"Benign", "InSitu", "Invasive", "Normal"}
    assert "no official labelled test set" in res.out and "published release has 400" in res.out


def test_breakhis_is_patient_disjoint_at_one_magnification(tmp_path, gpfm_cli):
    root = tmp_path / "BreaKHis_v1" / "histology_slides" / "breast"
    seed = 0
    for kind, subtype in (("benign", "tubular_adenoma"), ("benign", "fibroadenoma"), ("benign", "adenosis"),
                          ("malignant", "ductal_carcinoma"), ("malignant", "mucinous_carcinoma")):
        for p in range(4):
            for mag in ("40X", "100X"):
                for i in range(3):
                    seed += 1
                    _write_tile(root / kind / "SOB" / subtype / f"SOB_X_{subtype[:2]}-14-{p}" / mag / f"i{i}.png", seed)
    res = gpfm_cli("bench-import", "breakhis", tmp_path / "BreaKHis_v1", "--data-root", tmp_path / "d")
    assert res.code == 0, res.err
    table = pd.read_csv(tmp_path / "d" / "roi" / "BreakHis" / "labels.csv")
    assert set(table["label"]) == {"TA", "F", "DC", "MC"} and len(table) == 4 * 4 * 3  # 40X only, adenosis out
    assert table.groupby("group")["split"].nunique().max() == 1  # no patient on both sides
    assert all(set(part["split"]) == {"train", "test"} for _, part in table.groupby("label"))
    assert "12 40X images of the other subtypes" in res.out


def test_pcam_h5_becomes_png_tiles(tmp_path, gpfm_cli, monkeypatch):
    import h5py

    from gpfm.eval.importers import checksums

    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("valid", 2), ("test", 3)):
        with h5py.File(tmp_path / f"camelyonpatch_level_2_split_{part}_x.h5", "w") as fh:
            fh.create_dataset("x", data=rng.integers(0, 255, (n, 96, 96, 3), dtype=np.uint8))
        with h5py.File(tmp_path / f"camelyonpatch_level_2_split_{part}_y.h5", "w") as fh:
            fh.create_dataset("y", data=(np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1))
    for f in tmp_path.glob("*.h5"):  # the replica's own "published" sums (the real ones are pinned in checksums)
        monkeypatch.setitem(checksums.PUBLISHED, f.name, ("md5", checksums.file_digest(f, "md5"), "replica"))
    res = gpfm_cli("bench-import", "pcam", tmp_path, "--data-root", tmp_path / "d")
    assert res.code == 0, res.err
    table = pd.read_csv(tmp_path / "d" / "roi" / "PCam" / "labels.csv")
    assert table["split"].value_counts().to_dict() == {"train": 6, "test": 3, "val": 2}
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_test_x.h5") as fh:
        first = fh["x"][1]
    row = table[table["split"] == "test"].iloc[1]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "d" / "roi" / "PCam" / row["path"])), first)  # lossless
    assert row["label"] == "tumor"
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_y.h5", "r+") as fh:  # damaged after download
        fh["y"][0] = 1
    res = gpfm_cli("bench-import", "pcam", tmp_path, "--data-root", tmp_path / "d2", "--overwrite")
    assert res.code == 2 and "split_valid_y.h5: md5" in res.err and not (tmp_path / "d2").exists()


def test_published_checksums_are_verified_when_the_archive_is_here(tmp_path, gpfm_cli, monkeypatch):
    from gpfm.eval.importers import checksums

    src = tmp_path / "dl"
    for folder in ("NCT-CRC-HE-100K", "CRC-VAL-HE-7K"):
        for cls in ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"):
            _write_tile(src / folder / cls / f"{cls}-1.tif", 1)
    archive = src / "NCT-CRC-HE-100K.zip"
    archive.write_bytes(b"not the real zip")
    res = gpfm_cli("bench-import", "crc-100k", src, "--data-root", tmp_path / "d")
    assert res.code == 2 and not (tmp_path / "d" / "roi" / "CRC-100K" / "labels.csv").exists()
    assert_one_line_error(res, str(archive), "035777cf327776a71a05c95da6d6325f", "download it again")
    good = hashlib.md5(archive.read_bytes()).hexdigest()  # noqa: S324 - the published algorithm
    monkeypatch.setitem(checksums.PUBLISHED, "NCT-CRC-HE-100K.zip", ("md5", good, "a test"))
    res = gpfm_cli("bench-import", "crc-100k", src, "--data-root", tmp_path / "d")
    assert res.code == 0 and f"NCT-CRC-HE-100K.zip: md5 matches the published {good}" in res.out
    assert "CRC-VAL-HE-7K.zip: not here" in res.out
