"""One module per task family; importing this package registers every protocol and task loader.

Each family module adds itself to the import list below with one line.
"""
