"""gpfm — the Generalizable Pathology Foundation Model and the toolkit around it.

Data flows one way: slide → tiles → features → tasks. Subpackages:
``gpfm.models`` (encoders), ``gpfm.wsi`` (slides, tissue, tiling, HDF5), ``gpfm.extract`` (slide → features),
``gpfm.pretrain`` (UNKD), ``gpfm.eval`` (benchmark protocols, suite runner, reports). The import rules between
them are in docs/architecture.md (and checked by ``tests/test_architecture.py``).

Notation in docstrings: **[F]** (faithful) marks what the GPFM release — its code and paper (Ma et al., Nature
Biomedical Engineering 2025; github.com/birkhoffkiki/GPFM) — does; **[I]** marks a deviation gpfm offers as an
improvement; **switch #N** is row N of the pretraining switch table in docs/pretrain.md.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpfm")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0+src"

__all__ = ["__version__"]
