"""Where the bundled data lives.

A regular install copies the repository's ``data/`` folder into the package (``minibert/data``); an
editable install or a checkout uses ``data/`` beside the package. ``data_dir()`` finds either.

The pretrained models that ship in ``data/pretrained/`` go by their names (``SHIPPED_MODELS``):
wherever a model folder is asked for, ``tiny`` or ``mini`` will do (``model_dir``).
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


# A constant rather than the folders found under data/pretrained: the names in help texts and error
# messages stay the same on every install, and asking for a shipped model whose folder is missing
# gets an error that says so instead of "no such folder".
SHIPPED_MODELS = ("tiny", "mini")


def shipped_model(name: str) -> Path:
    """The folder of the shipped model ``name`` (one of ``SHIPPED_MODELS``), checked to exist."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"no shipped model is called {name!r}; the shipped models are "
                         f"{', '.join(SHIPPED_MODELS)}")
    folder = data_dir() / "pretrained" / name
    if not folder.is_dir():
        raise FileNotFoundError(f"the shipped model {name} is missing: {folder} does not exist; "
                                "reinstall minibert from the repository, or name another model")
    return folder


def model_dir(model) -> Path:
    """The folder a model argument names: the path itself when it exists (so a folder ``tiny`` in
    the working directory wins), else, for a name in ``SHIPPED_MODELS``, that shipped model's
    folder; any other path comes back unchanged, for the loader to report as missing."""
    path = Path(model)
    if path.exists() or path.is_symlink() or str(model) not in SHIPPED_MODELS:
        return path
    return shipped_model(str(model))
