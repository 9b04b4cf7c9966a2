"""The package's version, from its installed metadata (pyproject.toml is the one place it is written)."""

from __future__ import annotations

__all__ = ["VERSION"]

from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("sentinel-forwarder")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


#: The installed distribution's version, or ``"unknown"``.
VERSION = _version()
