"""The few lines every lesson in ``lessons/`` starts with, so each lesson still runs on its own.

A lesson begins with

    QUICK, FIGURES = lessons.setup(globals().get("__file__"))

and gets:

* ``QUICK``: True when ``MINIBERT_QUICK`` is set to anything but "" or "0". Quick mode shrinks sizes and
  repeats so the test suite can run every lesson in seconds.
* ``FIGURES``: the folder its PNGs go to, created if missing: ``MINIBERT_FIGURES`` when set (the tests
  point it at a temporary folder, so running the tests never writes into the repository), else
  ``figures/`` beside the lesson file, or ``figures/`` in the working directory in a notebook, where
  ``__file__`` is not defined.
* ``pretrained_model()`` (lessons 09-14 and 16): the folder of the pretrained model the lesson
  starts from, chosen by ``MINIBERT_MODEL``: a shipped model's name (``tiny``, ``mini``) or a
  model folder, such as a run of ``minibert pretrain``; unset, the shipped ``tiny``, for which
  the lessons' "What you should see" numbers were measured.
* matplotlib's file-only backend "Agg" when the lesson runs as a script (no window opens and nothing
  waits for one to close); in a notebook (an ipykernel is loaded) figures stay inline.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

QUICK_VARIABLE = "MINIBERT_QUICK"
FIGURES_VARIABLE = "MINIBERT_FIGURES"
MODEL_VARIABLE = "MINIBERT_MODEL"


def quick() -> bool:
    """Whether ``MINIBERT_QUICK`` asks for quick mode (any value but "" and "0")."""
    return os.environ.get(QUICK_VARIABLE, "") not in ("", "0")


def figures_dir(lesson_file: str | os.PathLike | None = None) -> Path:
    """The folder a lesson's figures go to (created if missing); see the module docstring."""
    chosen = os.environ.get(FIGURES_VARIABLE, "")
    if chosen:
        folder = Path(chosen).expanduser()
    elif lesson_file is not None:
        folder = Path(lesson_file).resolve().parent / "figures"
    else:
        folder = Path("figures")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pretrained_model() -> Path:
    """The pretrained model folder ``MINIBERT_MODEL`` names (see the module docstring)."""
    from minibert import checkpoint, paths

    chosen = os.environ.get(MODEL_VARIABLE, "")
    if not chosen:
        return paths.shipped_model("tiny")
    return checkpoint.model_folder(Path(chosen).expanduser(), f"{MODEL_VARIABLE}={chosen}")


def setup(lesson_file: str | os.PathLike | None = None) -> tuple[bool, Path]:
    """(quick mode, figures folder) for a lesson; selects the Agg backend outside notebooks."""
    if "ipykernel" not in sys.modules:
        import matplotlib
        matplotlib.use("Agg")
    return quick(), figures_dir(lesson_file)
