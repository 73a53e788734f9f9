"""The slide backend registry: one reader class per file format family, by name."""

from __future__ import annotations

from gpfm.registry import Registry
from gpfm.wsi.readers.base import SlideBackend
from gpfm.wsi.readers.dicom_backend import DicomBackend
from gpfm.wsi.readers.image_backend import ImageBackend
from gpfm.wsi.readers.openslide_backend import OpenSlideBackend
from gpfm.wsi.readers.tiffslide_backend import TiffSlideBackend

BACKENDS: Registry[type[SlideBackend]] = Registry("slide backend")
for _cls in (OpenSlideBackend, TiffSlideBackend, DicomBackend, ImageBackend):
    BACKENDS.register(_cls.name, _cls)
