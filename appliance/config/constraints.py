"""Constraints on config values that a type cannot express (used by the schema
and by the areas defined beside it, such as ``[delivery]``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen


@frozen
class Check:
    """A constraint on a config value, checked after the value has its type.

    Use it as ``Annotated[int, Check(lambda v: v >= 1, "an integer of at least 1")]``;
    ``expected`` completes the sentence "expected ... (got ...)" in error messages.
    """

    test: Callable[[Any], bool]
    expected: str


def at_least(minimum: int, what: str = "an integer") -> Check:
    return Check(lambda value: value >= minimum, f"{what} of at least {minimum}")
