"""Package discovery, which pyproject.toml cannot say alone: every sub-package of hf_lottery/ is found, and the card
templates in the top-level model_cards/ ship as hf_lottery.model_cards (the mapping is in pyproject.toml). A plain
`find` would also ship model_cards as a stray top-level package."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["hf_lottery", "hf_lottery.*"]), "hf_lottery.model_cards"])
