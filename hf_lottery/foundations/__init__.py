"""The ground floor: what every other floor stands on and that knows nothing of models or pruning.

Errors and the version; the plug-in registry; the arguments of each command (dataclasses whose fields carry
their help and role); safe, atomic file writing and reading; whether the Hub answers before a download.
"""
