"""One module per weight source; importing this package registers every encoder once."""

from gpfm.models.encoders import efficientnet, gpfm  # noqa: F401
