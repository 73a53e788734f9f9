"""``gpfm bench gpfm_nbme --extract`` end to end, on a data root built only by the importers from replicas.

Every reproducible task family runs: slide classification, survival, ROI classification, ROI retrieval, VQA
and report generation. The cohorts are STAND-INS, named as such: crops of the real slides in ../shared/data
(CMU-1 small region, TCGA-CR-7395 frozen section, the TCGA DICOM), written as pyramidal TIFFs and embedded by
``--extract`` with EfficientNet-Lite0's real weights; the label/split files are faithful replicas of the GPFM
repository's own formats (read by ``bench-import gpfm-repo``) and of the NCT-CRC archive layout (real tiles);
the VQA and report texts are real PathVQA questions and PatchGastricADC22 captions paired with stand-in images
and slides. The numbers mean nothing; the chain from downloads to leaderboard is what is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import shared_path
from tests.faults._helpers import gpfm_cli  # noqa: F401 - fixture

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
ENCODER = "efficientnet-lite0-imagenet"
CROP = 1280  # 640 µm at the declared 0.5 µm/px: above the tissue detector's 0.26 mm² minimum area
TASKS = ["bracs-3", "tcga-blca-survival", "crc-100k", "crc-retrieval", "pathvqa", "patchgastric-report"]


def _crops(slide_path: Path, n: int, seed: int) -> list[np.ndarray]:
    """``n`` tissue-rich CROP×CROP level-0 crops of a real slide."""
    from gpfm.wsi import open_slide

    slide = open_slide(slide_path, mpp=0.5)
    w, h = slide.dimensions
    rng = np.random.default_rng(seed)
    out, tries = [], 0
    while len(out) < n and tries < 400:
        tries += 1
        x, y = int(rng.integers(0, w - CROP)), int(rng.integers(0, h - CROP))
        rgb = slide.read_region(x, y, 0, (CROP, CROP))
        hi, lo = rgb.max(axis=2).astype(np.float32), rgb.min(axis=2).astype(np.float32)
        saturation = 255 * (hi - lo) / np.maximum(hi, 1)  # HSV saturation, as the tissue detector sees it
        if (saturation > 20).mean() > 0.7:  # mostly stained tissue
            out.append(rgb)
    assert len(out) == n, f"{slide_path}: not enough tissue crops"
    return out


@pytest.fixture(scope="module")
def standin_pixels() -> dict[str, list[np.ndarray]]:
    wsi = shared_path("wsi")
    return {"cmu": _crops(wsi / "CMU-1-Small-Region.svs", 10, 0),
            "tcgacr": _crops(wsi / "TCGA-CR-7395-01A-01-TS1.svs", 10, 1),
            "dicom": _crops(wsi / "TCGA-XK-AAJU-01A-01-TS1_pathml_small_dicom.dcm", 10, 2)}


def _write_slides(folder: Path, names: list[str], pixels: list[np.ndarray]) -> None:
    from gpfm.wsi.pyramid import write_pyramidal_tiff

    folder.mkdir(parents=True, exist_ok=True)
    for name, rgb in zip(names, pixels, strict=True):
        write_pyramidal_tiff(folder / f"{name}.tif", rgb, mpp=0.5)


def _gpfm_repo_replica(root: Path, bracs: list[tuple[str, str]], blca: list[str]) -> Path:
    """The GPFM repository's formats: dataset_csv + splits712 (CLAM) + survival_by_case, for stand-in slides."""
    repo = root / "GPFM-replica"
    (repo / "dataset_csv" / "survival_by_case").mkdir(parents=True)
    (repo / "splits712" / "BRACS-3_100").mkdir(parents=True)
    pd.DataFrame({"dir": "/storage/STANDIN", "case_id": [s for s, _ in bracs], "slide_id": [s for s, _ in bracs],
                  "label": [lab for _, lab in bracs]}).to_csv(repo / "dataset_csv" / "BRACS-3.csv", index=False)
    sides: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, (slide, _) in enumerate(bracs):  # per class of 10: 6 train, 1 val, 3 test
        sides[(["train"] * 6 + ["val"] + ["test"] * 3)[i % 10]].append(slide)
    pd.DataFrame({k: pd.Series(v) for k, v in sides.items()}).to_csv(repo / "splits712" / "BRACS-3_100" /
                                                                    "splits_0.csv")
    rng = np.random.default_rng(3)
    rows = []
    for i, slide in enumerate(blca):
        folds = ["train"] * 5
        folds[i % 5] = "val"
        rows.append({"Study": "TCGA-BLCA", "case_id": f"STANDIN-CASE-{i:02d}",
                     "survival_months": float(rng.uniform(2, 80)), "censorship": float(i % 3 == 0),
                     "slide_id": f"/storage2/pathology/features/pt_files/resnet50/{slide}.pt",
                     **{f"Fold {k}": folds[k] for k in range(5)}})
    pd.DataFrame(rows).to_csv(repo / "dataset_csv" / "survival_by_case" / "TCGA_BLCA_Splits.csv", index=False)
    return repo


def _crc_archive(root: Path) -> Path:
    """NCT-CRC-HE-100K / CRC-VAL-HE-7K layout from the real one-per-class tiles (8 dihedral variants each)."""
    src = shared_path("patches", "nct_crc_he_100k_samples")
    archive = root / "crc-download"
    for tile in sorted(src.glob("*.tif")):
        cls = tile.name.split("-")[0]
        img = Image.open(tile).convert("RGB")
        variants = [img.rotate(90 * r).transpose(Image.Transpose.FLIP_LEFT_RIGHT) if f else img.rotate(90 * r)
                    for f in (0, 1) for r in range(4)]
        for j, v in enumerate(variants):
            part = "NCT-CRC-HE-100K" if j < 5 else "CRC-VAL-HE-7K"
            (archive / part / cls).mkdir(parents=True, exist_ok=True)
            v.save(archive / part / cls / f"{cls}-STANDIN{j}.tif")
    return archive


def _pathvqa(data: Path) -> None:
    """Real PathVQA test records (LXMERT JSON) split 60/10/30 by image, with stand-in H&E tiles as images."""
    records = json.loads(shared_path("text", "pathvqa", "pvqa_test_first67.json").read_text())
    records = [r for r in records if r["sentf"]["pvqa"]]
    tiles = sorted(shared_path("patches", "lc25000_lung_224").glob("*/*.jpeg"))
    out = data / "vqa" / "PathVQA"
    (out / "images").mkdir(parents=True)
    n = len(records)
    cut = {"train": records[: int(0.6 * n)], "val": records[int(0.6 * n): int(0.7 * n)],
           "test": records[int(0.7 * n):]}
    for part, recs in cut.items():
        (out / f"{part}.json").write_text(json.dumps(recs))
    for i, rec in enumerate(records):
        Image.open(tiles[i * 7 % len(tiles)]).save(out / "images" / f"{rec['img_id']}.jpg")


def test_nbme_from_replicas_to_leaderboard(standin_pixels, tmp_path, gpfm_cli):
    data = tmp_path / "data"
    # --- stand-in cohorts (real pixels): BRACS-3 (3 "classes" = 3 source slides), TCGA-BLCA, PatchGastric
    bracs = [(f"STANDIN-{src}-{i:02d}", src) for src in standin_pixels for i in range(10)]
    _write_slides(data / "slides" / "BRACS", [s for s, _ in bracs],
                  [p for src in standin_pixels for p in standin_pixels[src]])
    blca = [f"STANDIN-BLCA-{i:02d}" for i in range(15)]
    _write_slides(data / "slides" / "TCGA-BLCA", blca, [p for src in standin_pixels for p in standin_pixels[src]][:15])
    captions = pd.read_csv(shared_path("text", "patchgastric_adc22", "captions.csv")).head(20)
    (data / "reports" / "PatchGastricADC22").mkdir(parents=True)
    captions.to_csv(data / "reports" / "PatchGastricADC22" / "captions.csv", index=False)
    _write_slides(data / "slides" / "PatchGastricADC22", list(captions["id"]),
                  [p for src in standin_pixels for p in standin_pixels[src]][10:30])
    _pathvqa(data)
    # --- the importers build the label/split tables from the replicas
    repo = _gpfm_repo_replica(tmp_path, bracs, blca)
    res = gpfm_cli("bench-import", "gpfm-repo", repo, "--data-root", data)
    assert res.code == 0, res.err
    assert "BRACS-3: 30 slides" in res.out and "TCGA-BLCA: 15 slides, 15 cases" in res.out
    assert "missing  TCGA-NSCLC: needs splits712/LUAD_LUSC_100/" in res.out  # what a partial copy lacks is said
    assert gpfm_cli("bench-import", "crc-100k", _crc_archive(tmp_path), "--data-root", data).code == 0
    # --- before extraction, bench-check names the missing feature folders and how to fill them
    res = gpfm_cli("bench-check", "gpfm_nbme", "--data-root", data, "-e", ENCODER, "--json")
    checks = {t["task"]: t for t in json.loads(res.out)["tasks"]}
    assert checks["crc-100k"]["ready"] and not checks["bracs-3"]["ready"]
    assert checks["bracs-3"]["missing"][ENCODER] == [str(data / "features" / "BRACS" / ENCODER)]
    # --- one command: extract the cohorts, run every family, rank
    out = tmp_path / "run"
    args = ("bench", "gpfm_nbme", "--data-root", data, "-e", ENCODER, "--tasks", ",".join(TASKS), "--extract",
            "--out", out, "--device", "cpu", "--precision", "fp32")
    res = gpfm_cli(*args)
    results = pd.read_csv(out / "results.csv")
    assert res.code == 0, (res.err[-3000:], results[["task", "protocol", "status", "reason"]].to_string())
    assert set(results["task"]) == set(TASKS) and (results["status"] == "ok").all()
    assert set(results["family"]) == {"wsi_classification", "survival", "roi_classification", "roi_retrieval", "vqa",
                        "report_generation"}
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["coverage"] == {"benchmark": "GPFM NBME benchmark (Ma et al. 2025)", "tasks": 72,
                                 "not_reproducible": 23, "reproducible": len(TASKS), "with_results": len(TASKS)}
    html = (out / "report.html").read_text()
    assert "Coverage of GPFM NBME benchmark" in html and "center-3-gc" in html
    assert (data / "features" / "BRACS" / ENCODER).is_symlink()
    assert len(list((data / "features" / "BRACS" / ENCODER).glob("*.h5"))) == 30
    # --- again: extraction resumes (nothing re-embedded) and every result is reused
    res = gpfm_cli(*args)
    assert res.code == 0 and "extract BRACS × efficientnet-lite0-imagenet: skipped 30" in res.err, res.err[-2000:]
    again = json.loads((out / "results.json").read_text())
    assert all(r["reused"] for r in again["rows"])
