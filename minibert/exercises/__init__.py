"""Exercises that grade themselves: ``minibert exercise list``, ``start NAME``, ``check NAME``.

``start`` writes a small Python file with the signatures, docstrings, shapes and the starting point
of each derivation; the bodies are the learner's. ``check`` imports that file and grades it in
float64 against the package's own implementation and central finite differences, saying where it
goes wrong (which shape and axis, which tensor and element, which classic mistake) and, on request,
giving hints that reveal a little more each time. Templates, grader and hints all live in this
package, so the cycle works in any installation, outside the repository too."""

from __future__ import annotations

from pathlib import Path

from minibert.exercises.base import Exercise
from minibert.exercises.grader import LearnerError, Report, load_learner_module

EXERCISES: dict[str, Exercise] = {}


def _register():
    from minibert.exercises import layers, ops, training

    for module in (ops, layers, training):
        for exercise in module.EXERCISES:
            EXERCISES[exercise.name] = exercise


_register()


def get(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ValueError(
            f"unknown exercise {name!r}; `minibert exercise list` shows them: "
            f"{', '.join(EXERCISES)}"
        )
    return EXERCISES[name]


def learner_path(name: str, directory: str | Path = ".") -> Path:
    return Path(directory) / f"{name}.py"


def start(name: str, directory: str | Path = ".") -> Path:
    """Write the template of ``name`` to DIRECTORY/NAME.py; never overwrites a file that exists."""
    exercise = get(name)
    path = learner_path(name, directory)
    if path.exists():
        raise ValueError(
            f"{path} already exists (your work, perhaps); check it with `minibert exercise check "
            f"{name}`, or start afresh elsewhere with --dir"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as f:  # "x": fail rather than overwrite, even in a race
        f.write(exercise.template)
    return path


def check(name: str, directory: str | Path = ".") -> Report:
    """Grade DIRECTORY/NAME.py."""
    exercise = get(name)
    path = learner_path(name, directory)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; write the template first with `minibert exercise start "
            f"{name}`" + (f" --dir {directory}" if str(directory) != "." else "")
        )
    try:
        module = load_learner_module(path)
    except LearnerError as exc:
        report = Report(name)
        report.add("importing your file", False, str(exc))
        return report
    return exercise.grade(module)


def hints(name: str, k: int) -> list[str]:
    """The first k hints of ``name`` (all of them if k is larger)."""
    exercise = get(name)
    if k < 1:
        raise ValueError(f"--hint takes a number from 1 to {len(exercise.hints)}, got {k}")
    return list(exercise.hints[:k])
