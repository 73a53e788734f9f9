"""Fixtures of the fault suite (defined in :mod:`tests.faults._helpers`)."""

from tests.faults._helpers import cmu, gpfm_cli, tcga, tiny_encoder  # noqa: F401
