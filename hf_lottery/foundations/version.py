"""The package version, in a module of its own so that what records it (cards, ticket facts) imports nothing else."""

__version__ = "0.1.0"
