"""gpfm — the Generalizable Pathology Foundation Model and the toolkit around it.

Data flows one way: slide → tiles → features → tasks. Subpackages:
``gpfm.models`` (encoders), ``gpfm.wsi`` (slides, tissue, tiling, HDF5), ``gpfm.extract`` (slide → features),
``gpfm.pretrain`` (UNKD), ``gpfm.eval`` (benchmark protocols, suite runner, reports).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpfm")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0+src"

__all__ = ["__version__"]
