"""The argument checks the package repeats, written once, each with one exception type and one message.

    a count that must be a positive integer (steps, sizes, limits)     -> ValueError
    an ``rng`` that must be a ``numpy.random.Generator``               -> TypeError

Messages name the argument and what was given, and for the generator say how to make one.
"""
from __future__ import annotations

import numbers

import numpy as np


def positive_int(name: str, value) -> int:
    """``value`` as an int if it is an integer >= 1 (bool is not accepted), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def generator(name: str, rng) -> np.random.Generator:
    """``rng`` if it is a ``numpy.random.Generator``, else TypeError (every random draw in minibert takes one
    explicitly, so that one seed makes a run repeatable)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name} must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng
