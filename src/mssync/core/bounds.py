"""Numeric ranges checked when a command line is parsed, before any slow work starts.

`Bounded` is an argparse type: it converts the text and refuses a value outside its range with a
message that names the range, so `--size 0` is a one-line usage error (exit 2), not a cv2
traceback, and `--size 10000` is refused at once instead of after a minute and 6 GB of memory.
An option that overrides a params.yaml value takes its range from the schema (`schema_bound`),
so the command line and params.yaml cannot disagree about what is valid.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

from mssync.core.config import params_schema


@dataclasses.dataclass(frozen=True)
class Bounded:
    """An int or float in [low, high] (an end is excluded when `low_open` / `high_open`), optionally a
    multiple of `multiple_of`; usable as `type=` of argparse.add_argument."""

    kind: type
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    multiple_of: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in (int, float):
            raise TypeError(f"Bounded is for int or float, not {self.kind!r}")
        if not self.low <= self.high:
            raise ValueError(f"empty range {self.low} .. {self.high}")

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            noun = "an integer" if self.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun} {self}, got {text!r}") from None
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self}, got {text}")
        return value

    def contains(self, value: float) -> bool:
        """Whether `value` is in range (NaN and infinities never are)."""
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below and (self.multiple_of is None or value % self.multiple_of == 0)

    def __str__(self) -> str:
        low, high = (str(int(v)) if self.kind is int else f"{v:g}" for v in (self.low, self.high))
        if self.low_open or self.high_open:
            text = f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        else:
            text = f"between {low} and {high}"
        return text + (f" and a multiple of {self.multiple_of}" if self.multiple_of else "")


def _schema_node(key: str) -> dict[str, Any]:
    """The params schema node of a dotted key; `[]` steps into an array's items ('pyramid.levels[]')."""
    node: dict[str, Any] = params_schema()
    for part in key.split("."):
        items = part.endswith("[]")
        node = node["properties"][part.removesuffix("[]")]
        if items:
            node = node["items"]
    return node


def schema_bound(key: str) -> Bounded:
    """The range params.schema.yaml gives a numeric value, as an argparse type: the one source of the
    bounds of a command-line option that overrides that value."""
    node = _schema_node(key)
    kind = {"integer": int, "number": float}[node["type"]]
    low, high = node.get("minimum", node.get("exclusiveMinimum")), node.get("maximum", node.get("exclusiveMaximum"))
    if low is None or high is None:
        raise KeyError(f"params.schema.yaml: {key} has no lower and upper bound (an enum is an argparse `choices`)")
    return Bounded(kind, low, high, low_open="exclusiveMinimum" in node, high_open="exclusiveMaximum" in node,
                   multiple_of=node.get("multipleOf"))
