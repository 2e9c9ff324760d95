"""The package version, written once: lewm_fast.__version__ and pyproject.toml's (setuptools reads it here)."""

__version__ = "0.1.0"
