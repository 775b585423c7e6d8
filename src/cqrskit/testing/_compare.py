"""Comparing expected with actual sequences (events, rows) and saying how they differ.

A failure message lists both sides, numbered, then points at the first difference; for
two dataclasses of one type (events) it names the fields that differ. Comparison is
``expected == actual`` item by item, so :data:`unittest.mock.ANY` stands for a value the
test cannot know (an id, a hash, a time).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["check_raised", "describe", "mismatch", "show_error"]

E = TypeVar("E", bound=BaseException)


def describe(items: Sequence[object], labels: Sequence[str] | None = None) -> str:
    """One numbered line per item (``label: item`` when labelled), or ``  (none)``."""
    if not items:
        return "  (none)"
    tags = [f"{label}: " for label in labels] if labels is not None else [""] * len(items)
    return "\n".join(
        f"  {i}. {tag}{item!r}" for i, (tag, item) in enumerate(zip(tags, items, strict=True), 1)
    )


def _field_changes(expected: object, actual: object) -> list[str]:
    """The fields (of a dataclass) or columns (of a tuple, a row) that differ."""
    if type(expected) is not type(actual):
        return []
    if isinstance(expected, tuple) and isinstance(actual, tuple):
        if len(expected) != len(actual):
            return [f"    expected {len(expected)} columns, actual {len(actual)}"]
        pairs = [
            (f"column {i}", w, g) for i, (w, g) in enumerate(zip(expected, actual, strict=True), 1)
        ]
    elif dataclasses.is_dataclass(expected):
        names = [field.name for field in dataclasses.fields(expected)]
        pairs = [(n, getattr(expected, n), getattr(actual, n)) for n in names]
    else:
        return []
    return [f"    {n}: expected {w!r}, actual {g!r}" for n, w, g in pairs if w != g]


def _first_difference(expected: Sequence[object], actual: Sequence[object]) -> list[str]:
    for i, (want, got) in enumerate(zip(expected, actual, strict=False), 1):
        if want != got:
            if type(want) is not type(got):
                return [
                    f"first difference at #{i}: expected a {type(want).__qualname__},"
                    f" actual a {type(got).__qualname__}"
                ]
            return [f"first difference at #{i}:", *_field_changes(want, got)]
    shorter, longer = sorted((len(expected), len(actual)))
    missing = "missing" if len(expected) > len(actual) else "unexpected"
    return [f"first difference at #{shorter + 1}: {longer - shorter} {missing} at the end"]


def mismatch(
    what: str,
    expected: Sequence[object],
    actual: Sequence[object],
    labels: Sequence[str] | None = None,
) -> str | None:
    """None when ``expected`` equals ``actual`` item by item, else the failure message.

    ``labels`` name the actual items (e.g. their streams) in the message.
    """
    if len(expected) == len(actual) and all(w == g for w, g in zip(expected, actual, strict=True)):
        return None
    return "\n".join(
        [
            f"{what} differ",
            f"expected {len(expected)}:",
            describe(expected),
            f"actual {len(actual)}:",
            describe(actual, labels),
            *_first_difference(expected, actual),
        ]
    )


def show_error(error: BaseException) -> str:
    return f"{type(error).__qualname__}: {error}"


def check_raised(error: BaseException | None, kind: type[E], match: str | None, action: str) -> E:
    """``error`` if it is a ``kind`` whose message matches ``match`` (``re.search``), else
    an :class:`AssertionError` saying what ``action`` did instead."""
    __tracebackhide__ = True
    if error is None:
        raise AssertionError(f"expected {kind.__qualname__}, but {action} raised nothing")
    if not isinstance(error, kind):
        raise AssertionError(
            f"expected {kind.__qualname__}, but {action} raised {show_error(error)}"
        ) from error
    if match is not None and not re.search(match, str(error)):
        raise AssertionError(
            f"{action} raised {kind.__qualname__} as expected, but its message {str(error)!r}"
            f" does not match {match!r}"
        ) from error
    return error
