"""One module per weight source; each registers its encoders with :func:`gpfm.models.catalog.register_encoder`.

The registry imports every module of this folder on its first lookup: a new encoder is one new file here.
"""
