"""What a config key accepts (a ``Rule``: type, range, choices) and the constructors the schema and
the models declare their keys with. Sits at the bottom of the import layers so that a model class
can state its own knobs' rules next to the knobs (``knob_rules``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import ListConfig

NOT_A_VALUE = "abc"  # a string where a number, flag or list is expected


@dataclass(frozen=True)
class Rule:
    """What one key accepts.

    ``kind``: "int", "number" (int or float), "bool", "choice" (one of ``choices``), "numbers" (a
    list of ``length`` numbers) or "count_or_fraction" (Lightning's limit_*_batches: an int >= 0 or
    a float in [0, 1]; with ``low_open``, not 0). ``low`` / ``high`` bound numbers (open with
    ``low_open`` / ``high_open``);
    ``also`` lists further literal values that are accepted (-1, "auto"); ``nullable`` accepts null.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    length: int | None = None
    also: tuple = ()
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if value in self.also and type(value) in {type(a) for a in self.also}:
            return True
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if self.kind == "int":
            return _is_int(value) and self._in_range(value)
        if self.kind == "number":
            return _is_number(value) and self._in_range(value)
        if self.kind == "count_or_fraction":
            if self.low_open and value == 0:
                return False
            return (_is_int(value) and value >= 0) or (_is_number(value) and 0 <= value <= 1)
        if self.kind == "numbers":
            return (
                isinstance(value, (list, tuple, ListConfig))
                and (self.length is None or len(value) == self.length)
                and all(_is_number(v) and self._in_range(v) for v in value)
            )
        raise ValueError(f"unknown rule kind {self.kind!r}")

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f" in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        if self.low is not None:
            return f" {'>' if self.low_open else '>='} {_fmt(self.low)}"
        if self.high is not None:
            return f" {'<' if self.high_open else '<='} {_fmt(self.high)}"
        return ""

    def allowed(self) -> str:
        """What is accepted, in words: 'an integer >= 2', 'one of ['normal', 'uniform']'."""
        text = {
            "bool": "true or false",
            "choice": f"one of {list(self.choices)}",
            "int": f"an integer{self._range()}",
            "number": f"a number{self._range()}",
            "count_or_fraction": (
                "an integer >= 1 (batches) or a fraction in (0.0, 1.0]"
                if self.low_open
                else "an integer >= 0 (batches) or a fraction in [0.0, 1.0]"
            ),
            "numbers": f"a list of {self.length or 'any number of'} numbers{self._range()}",
        }[self.kind]
        extras = [repr(a) for a in self.also] + (["null"] if self.nullable else [])
        return text + (f" (or {', '.join(extras)})" if extras else "")

    def wrong_type_example(self) -> Any:
        """A value of the wrong type for this key (for the schema sweep test)."""
        if self.kind == "choice":  # a type none of the choices has
            return NOT_A_VALUE if any(isinstance(c, int) for c in self.choices) else 3
        return NOT_A_VALUE

    def out_of_range_example(self) -> Any | None:
        """A value of the right type outside the allowed range, or None if every value is valid."""
        if self.kind == "choice":
            return "not_an_option"
        if self.kind == "count_or_fraction":
            return 0 if self.low_open else 1.5
        unbounded = self.low is None and self.high is None
        if self.kind not in ("int", "number", "numbers") or unbounded:
            return None
        if self.low is not None:
            bad = self.low if self.low_open else self.low - 1
        else:
            bad = self.high if self.high_open else self.high + 1
        bad = int(bad) if self.kind == "int" else float(bad)
        if bad in self.also:  # e.g. max_epochs: below 1 is invalid, but -1 means "no limit"
            bad -= 1
        return [bad] * (self.length or 1) if self.kind == "numbers" else bad


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and not (
        isinstance(value, float) and math.isnan(value)
    )


def _fmt(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def integer(low=None, high=None, *, also=(), nullable=False) -> Rule:
    return Rule("int", low, high, also=tuple(also), nullable=nullable)


def number(low=None, high=None, *, low_open=False, high_open=False, nullable=False) -> Rule:
    return Rule("number", low, high, low_open, high_open, nullable=nullable)


def positive(nullable=False) -> Rule:
    return number(0, low_open=True, nullable=nullable)


def boolean(*, also=(), nullable=False) -> Rule:
    return Rule("bool", also=tuple(also), nullable=nullable)


def choice(*values, nullable=False) -> Rule:
    return Rule("choice", choices=tuple(values), nullable=nullable)


SEED = integer(0, 2**32 - 1)
