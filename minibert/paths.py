"""Where the bundled data lives.

A regular install copies the repository's ``data/`` folder into the package (``minibert/data``); an
editable install or a checkout uses ``data/`` beside the package. ``data_dir()`` finds either.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir() -> Path:
    for candidate in (_PACKAGE / "data", _PACKAGE.parent / "data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"minibert's bundled data folder was not found (looked in {_PACKAGE / 'data'} and "
        f"{_PACKAGE.parent / 'data'}); reinstall the package from the repository"
    )


def data_path(*parts: str) -> Path:
    """A path inside the bundled data folder, checked to exist."""
    path = data_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"bundled data file missing: {path}")
    return path
