"""Write small synthetic DICOM-WSI series (VL Whole Slide Microscopy Image) for reader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WSI_SOP = "1.2.840.10008.5.1.4.1.1.77.1.6"


def write_instance(
    path: Path,
    image: np.ndarray,
    frame: int,
    *,
    series_uid: str,
    instance_uid: str,
    spacing_mm: float | None,
    codec: str = "raw",
    sparse: bool = False,
    image_type: str = "VOLUME",
) -> None:
    """One instance holding ``image`` (H, W, 3 uint8) cut into ``frame``² frames (edge frames zero-padded).

    ``codec`` is ``raw`` (explicit VR little endian) or ``j2k`` (lossless JPEG 2000, encapsulated). With
    ``sparse`` the frames are stored in reverse order as TILED_SPARSE with per-frame positions.
    """
    import imagecodecs
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate

    h, w = image.shape[:2]
    rows, cols = -(-h // frame), -(-w // frame)
    padded = np.zeros((rows * frame, cols * frame, 3), np.uint8)
    padded[:h, :w] = image
    tiles = [
        (r, c, padded[r * frame : (r + 1) * frame, c * frame : (c + 1) * frame])
        for r in range(rows)
        for c in range(cols)
    ]
    if sparse:
        tiles = tiles[::-1]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = WSI_SOP
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90" if codec == "j2k" else "1.2.840.10008.1.2.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = WSI_SOP, instance_uid, series_uid
    ds.ImageType = ["DERIVED", "PRIMARY", image_type, "NONE"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = frame, frame, len(tiles)
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.DimensionOrganizationType = "TILED_SPARSE" if sparse else "TILED_FULL"
    if spacing_mm is not None:
        measures = Dataset()
        measures.PixelSpacing = [spacing_mm, spacing_mm]
        shared = Dataset()
        shared.PixelMeasuresSequence = [measures]
        ds.SharedFunctionalGroupsSequence = [shared]
    if sparse:
        per_frame = []
        for r, c, _ in tiles:
            pos = Dataset()
            pos.RowPositionInTotalImagePixelMatrix = r * frame + 1
            pos.ColumnPositionInTotalImagePixelMatrix = c * frame + 1
            item = Dataset()
            item.PlanePositionSlideSequence = [pos]
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = per_frame
    if codec == "j2k":
        ds.PixelData = encapsulate([imagecodecs.jpeg2k_encode(t, level=0) for _, _, t in tiles])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = np.stack([t for _, _, t in tiles]).tobytes()
        ds["PixelData"].VR = "OB"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
