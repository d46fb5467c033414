"""The one check of a scalar argument's type, shared by every module (bottom of the imports).

``bool`` is an ``int`` subclass in Python, and ``np.bool_`` passes ``numbers``-based checks
in some NumPy versions; neither is a number here (``axis=True`` is a mistake, not 1).
"""

from __future__ import annotations

import numbers

import numpy as np


def is_number(value, *, integral: bool = False) -> bool:
    """Whether ``value`` is a real (``integral``: integer) scalar that is not a bool."""
    kind = numbers.Integral if integral else numbers.Real
    return isinstance(value, kind) and not isinstance(value, (bool, np.bool_))


def check_number(value, name: str, *, integral: bool = False, expected: str | None = None):
    """``value`` unchanged if :func:`is_number`, else ``TypeError`` naming ``name``.

    ``expected`` words the requirement (default: "an integer" / "a real number").
    """
    if not is_number(value, integral=integral):
        expected = expected or ("an integer" if integral else "a real number")
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    return value
