"""One module per weight source; importing this package registers every encoder once."""

from gpfm.models.encoders import (  # noqa: F401
    conch,
    efficientnet,
    gpfm,
    hoptimus,
    phikon,
    resnet,
    uni,
    virchow,
)
