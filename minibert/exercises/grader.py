"""The grader's tools: load a learner's file, call it safely, compare its numbers, name its
mistakes.

A grade is a list of checks, each with a verdict and a message that says *where* things went wrong:

* a shape that differs names the expected and the received shape and the first axis that differs;
* a forward that differs from the package's gives the largest error and the index where it occurs;
* a gradient that disagrees with central finite differences (float64, the step and tolerance of
  ``minibert.gradcheck``) names the first tensor and the first element that disagree, with both
  values;
* a classic mistake is recognised by name when the learner's numbers equal, to rounding, the numbers
  of a deliberately wrong implementation of that mistake run on the same inputs (never by guessing
  from the size of an error).

Everything runs in float64 so that rounding never hides an error or invents one.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import traceback
from pathlib import Path

import numpy as np

from minibert.gradcheck import TOLERANCE, entry_errors

# A forward agrees with the package's when every entry is within this relative error (float64
# rounding of the same algebra done in another order is ~1e-15; a real mistake is far larger).
FORWARD_RTOL = 1e-7


class LearnerError(Exception):
    """The learner's code could not be run (missing function, exception, not written yet)."""


@dataclasses.dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""
    diagnosis: str | None = None  # the name of a recognised classic mistake


@dataclasses.dataclass
class Report:
    exercise: str
    checks: list[Check] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def diagnoses(self) -> list[str]:
        return [c.diagnosis for c in self.checks if c.diagnosis]

    def add(self, what: str, ok: bool, detail: str = "", diagnosis: str | None = None) -> bool:
        self.checks.append(Check(what, ok, detail, diagnosis))
        return ok

    def format(self) -> str:
        lines = []
        for c in self.checks:
            lines.append(f"  {'ok  ' if c.ok else 'FAIL'}  {c.what}")
            if not c.ok and c.detail:
                lines += [f"        {line}" for line in c.detail.splitlines()]
            if c.diagnosis:
                lines.append(f"        recognised mistake: {c.diagnosis}")
        n_ok = sum(c.ok for c in self.checks)
        verdict = "PASSED" if self.passed else "not yet"
        lines.append(f"{self.exercise}: {n_ok} of {len(self.checks)} checks passed: {verdict}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ loading
def load_learner_module(path: Path):
    """Import the learner's file as a fresh module (a new name each time, so an edited file is
    re-read)."""
    name = f"minibert_exercise_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the learner's file may raise anything at import
        raise LearnerError(f"importing {path} failed: {_where(exc, path)}") from None
    return module


def _where(exc: BaseException, path: Path | None = None) -> str:
    """'ValueError: message (line 12 of file.py: the code)' for the innermost frame in the learner's
    file."""
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{text} (line {exc.lineno})"
    mine = [f for f in frames if path is None or Path(f.filename).resolve() == path.resolve()]
    if mine:
        f = mine[-1]
        return f"{text} (line {f.lineno} of {Path(f.filename).name}: {(f.line or '').strip()})"
    return text


def call(module, name: str, *args, **kwargs):
    """Call the learner's function ``name``; any failure becomes a LearnerError saying what and
    where."""
    fn = getattr(module, name, None)
    if not callable(fn):
        raise LearnerError(f"your file defines no function {name}() (keep the template's names)")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise LearnerError(f"{name}() is not written yet (it raises NotImplementedError)") from None
    except Exception as exc:
        path = Path(getattr(module, "__file__", "") or ".")
        raise LearnerError(f"{name}() raised {_where(exc, path)}") from None


def unpack(result, n: int, name: str):
    """Check that ``name`` returned an n-tuple (e.g. (out, cache))."""
    if not isinstance(result, tuple) or len(result) != n:
        got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
        raise LearnerError(f"{name}() must return a tuple of {n} values, got {got}")
    return result


# ------------------------------------------------------------------------------------------ numbers
def shape_message(name: str, expected: tuple, got: tuple) -> str:
    """'dx: expected shape (3, 7, 12), got (3, 12, 7): axis 1 has 12, expected 7'."""
    text = f"{name}: expected shape {tuple(expected)}, got {tuple(got)}"
    if len(expected) != len(got):
        return text + f" ({len(got)} axes instead of {len(expected)})"
    for axis, (e, g) in enumerate(zip(expected, got)):
        if e != g:
            return text + f": axis {axis} has {g}, expected {e}"
    return text


def as_array(name: str, value) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise LearnerError(f"{name} must be a NumPy array, got {type(value).__name__}") from None


def compare(
    report: Report, what: str, name: str, got, expected, rtol: float = FORWARD_RTOL
) -> bool:
    """Shape, finiteness, then the largest error and where it is; one check in the report."""
    expected = np.asarray(expected, dtype=np.float64)
    if got is None:
        return report.add(
            what, False, f"{name} is None, expected an array of shape {expected.shape}"
        )
    got = as_array(name, got)
    if got.shape != expected.shape:
        return report.add(what, False, shape_message(name, expected.shape, got.shape))
    bad = ~np.isfinite(got)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return report.add(
            what,
            False,
            f"{name} has {int(bad.sum())} non-finite entries, the first at "
            f"{idx} ({got[idx]}); expected {expected[idx]:.6g} there",
        )
    err = np.abs(got - expected)
    # Relative to the array's largest entry, with an absolute floor: a gradient that is exactly zero
    # (the key bias's) is ~1e-17 in any order of summation, and both are right.
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-6)
    if err.max(initial=0.0) <= rtol * scale:
        return report.add(what, True)
    idx = np.unravel_index(int(np.argmax(err)), err.shape)
    idx = tuple(int(i) for i in idx)
    n_bad = int((err > rtol * scale).sum())
    return report.add(
        what,
        False,
        f"{name} differs from the package's: max error {err[idx]:.3g} at {idx} "
        f"(got {got[idx]:.6g}, expected {expected[idx]:.6g}); "
        f"{n_bad} of {err.size} entries off",
    )


def numeric_gradient_mismatch(
    loss_fn,
    tensor: np.ndarray,
    analytic,
    max_entries: int = 300,
    rng: np.random.Generator | None = None,
):
    """The first entry (in index order) where ``analytic`` disagrees with central differences of
    ``loss_fn`` with respect to ``tensor`` (perturbed in place, restored), as (index, analytic,
    numeric, relative error), or None. The relative error and its floor are those of
    ``minibert.gradcheck``."""
    analytic = np.asarray(analytic, dtype=np.float64).reshape(tensor.shape)
    if tensor.size <= max_entries:
        idx = np.arange(tensor.size)
    else:
        rng = rng or np.random.default_rng(0)
        idx = np.sort(rng.choice(tensor.size, max_entries, replace=False))
    a, numeric, rel = entry_errors(loss_fn, tensor, analytic, idx)
    bad = np.flatnonzero(rel > TOLERANCE)
    if not len(bad):
        return None
    j = bad[0]
    index = tuple(int(k) for k in np.unravel_index(int(idx[j]), tensor.shape))
    return index, float(a[j]), float(numeric[j]), float(rel[j])


def weighted_sum(module, name: str, upstream, *args):
    """The scalar L = sum(y * upstream), y the first output of the learner's ``name(*args)``: the
    loss whose finite differences check a backward against a random upstream gradient."""
    return lambda: float(np.sum(as_array(name, call(module, name, *args)[0]) * upstream))


def gradient_check(report: Report, what: str, loss_fn, tensors: dict, grads: dict) -> bool:
    """One check: every tensor's gradient against finite differences; names the first bad
    element."""
    for name, tensor in tensors.items():
        g = grads.get(name)
        if g is None:
            return report.add(what, False, f"no gradient returned for {name}")
        g = as_array(f"the gradient of {name}", g)
        if g.shape != tensor.shape:
            return report.add(
                what, False, shape_message(f"the gradient of {name}", tensor.shape, g.shape)
            )
        found = numeric_gradient_mismatch(loss_fn, tensor, g)
        if found:
            index, a, n, rel = found
            return report.add(
                what,
                False,
                f"the first disagreement is in {name} at {index}: yours "
                f"{a:.6g}, finite differences {n:.6g} (relative error {rel:.2g})",
            )
    return report.add(what, True)


def same(a, b, rtol: float = 1e-6) -> bool:
    """Whether two outputs (arrays, or tuples of arrays) agree to rounding: the test for a known
    mistake."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y, rtol) for x, y in zip(a, b))
    try:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    if a.shape != b.shape or not np.isfinite(a).all():
        return False
    return bool(
        np.allclose(a, b, rtol=rtol, atol=rtol * max(float(np.abs(b).max(initial=0.0)), 1e-12))
    )


def diagnose(got, variants: dict) -> str | None:
    """The name of the first known-wrong variant whose output ``got`` reproduces, or None.
    ``variants`` maps a mistake's description to a function computing that mistake's output."""
    for mistake, compute in variants.items():
        try:
            expected = compute()
        except (
            Exception
        ):  # a variant that cannot run on these inputs says nothing about the learner
            continue
        if same(got, expected):
            return mistake
    return None


def fail_with_diagnosis(report: Report, got, variants: dict) -> None:
    """Attach the recognised mistake (if any) to the last failed check."""
    mistake = diagnose(got, variants)
    if mistake and report.checks and not report.checks[-1].ok:
        report.checks[-1].diagnosis = mistake
