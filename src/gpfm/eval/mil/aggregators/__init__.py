"""One module per MIL aggregator; each registers itself in :data:`gpfm.eval.mil.registry.AGGREGATORS`.

The registry imports every module of this folder on its first lookup: a new aggregator is one new file here.
"""
