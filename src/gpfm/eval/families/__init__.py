"""One module per task family, discovered by the registries: a new family is one file here.

The registries of :mod:`gpfm.eval.family` and :mod:`gpfm.eval.protocol` import every module of this folder on
their first lookup; modules whose names start with ``_`` are skipped.
"""
