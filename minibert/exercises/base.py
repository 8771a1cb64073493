"""What an exercise is: a template the learner fills in, hints, and a grading function."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from minibert.exercises.grader import LearnerError, Report

HEADER = '''"""Exercise {name}: {title}  (goes with lesson {lesson})

Fill in the bodies below (each one now raises NotImplementedError), then grade your work with

    minibert exercise check {name}              (add --hint, --hint 2, ... for hints)

Keep the function names and signatures: the grader calls them. Shapes use the package's legend:
B batch, T tokens, H hidden, A heads, D head size, I intermediate, V vocabulary, N rows.
Everything is graded in float64 against minibert's own implementation and finite differences.
"""
'''


@dataclasses.dataclass(frozen=True)
class Exercise:
    name: str
    title: str
    lesson: str  # the lesson it goes with, "01" .. "15"
    body: str  # the template after the common header
    hints: tuple[str, ...]  # each reveals a little more than the one before
    grade_fn: Callable  # grade_fn(module, report) adds checks; may raise LearnerError

    @property
    def template(self) -> str:
        return HEADER.format(name=self.name, title=self.title, lesson=self.lesson) + self.body

    def grade(self, module) -> Report:
        report = Report(self.name)
        try:
            # A learner's overflow is reported by the checks (non-finite entries, by name), not as
            # warnings.
            with np.errstate(all="ignore"):
                self.grade_fn(module, report)
        except LearnerError as exc:
            report.add("running your code", False, str(exc))
        return report
