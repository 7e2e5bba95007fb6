"""Typed parameters with valid ranges, declared once by the component that uses them.

A spec's ``params`` maps each parameter to its default, or to a :class:`Param`
(default plus rules). The rules are checked wherever a value enters a run's
configuration (``--set``, suite files, method presets), so a bad value is one
line and exit 2 before any run starts, not a failed run later::

    params={"mu": Param(0.1, low=0.0, doc="proximal weight"), "steps": 5}
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedbench.errors import ConfigError


@dataclass(frozen=True)
class Param:
    """A parameter's default and the values it accepts.

    ``low``/``high`` bound a number (``low_open``/``high_open`` exclude the
    bound); ``choices`` lists the accepted values; ``kind`` names a registry
    kind (e.g. ``"partitioner"``) whose registered names are the accepted values.
    """

    default: Any
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    kind: str | None = None
    doc: str = ""
    #: the value must be an int (not a bool, not a float)
    integer: bool = False

    def rule(self) -> str:
        """The accepted values, in words (for errors and ``fedbench list``)."""
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.kind is not None:
            return f"a registered {self.kind} name"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        bounds = " and ".join(parts)
        if self.integer:
            return "an integer" + (" " + bounds if bounds else "")
        return bounds or "any value"

    @property
    def allows_infinity(self) -> bool:
        """Whether an infinite number is a value (only where a bound itself is infinite: ``high=math.inf``)."""
        return self.high == math.inf or self.low == -math.inf

    def check(self, owner: str, key: str, value: Any, registry: Any = None) -> None:
        """Raise a ConfigError naming ``owner: key`` (``key`` alone when ``owner`` is empty), the value and the
        accepted ones when ``value`` breaks a rule."""
        name = f"{owner}: {key}" if owner else key
        bad = False
        if self.integer and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{name} must be {self.rule()}, got {value!r}")
        if self.choices is not None:
            bad = value not in self.choices
        elif self.kind is not None:
            if registry is not None and value not in registry.names(self.kind):
                registry.entry(self.kind, value)  # raises the unknown-name error with its did-you-mean hint
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isinf(value) and not self.allows_infinity:
                rule = self.rule()
                raise ConfigError(f"{name} must be a finite number{'' if rule == 'any value' else ' ' + rule}, "
                                  f"got {value!r}")
            if isinstance(value, float) and math.isnan(value):
                bad = True
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                bad = True
            if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
                bad = True
        if bad:
            raise ConfigError(f"{name} must be {self.rule()}, got {value!r}")


def split_params(params: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Param]]:
    """``(defaults, rules)`` of a spec's ``params``: plain values pass through, a Param gives both."""
    defaults: dict[str, Any] = {}
    rules: dict[str, Param] = {}
    for key, value in (params or {}).items():
        if isinstance(value, Param):
            defaults[key] = value.default
            rules[key] = value
        else:
            defaults[key] = value
    return defaults, rules


def check_all(owner: str, values: Mapping[str, Any], rules: Mapping[str, Param], registry: Any = None) -> None:
    """Check every value that has a rule."""
    for key, rule in rules.items():
        if key in values:
            rule.check(owner, key, values[key], registry)


def class_params(cls: type) -> dict[str, Any]:
    """The parameters a client or aggregator class declares in ``PARAMS`` (name -> default or
    :class:`Param`), its bases' first, less those its ``__init__`` cannot take (a subclass whose constructor
    passes its base fixed values and takes no ``**kwargs``): what its spec offers when the spec lists none."""
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        merged.update(klass.__dict__.get("PARAMS", {}))
    taken = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in taken.values()):
        return merged
    return {k: v for k, v in merged.items() if k in taken}


def declare(cls: type) -> None:
    """Make ``cls``'s own ``PARAMS`` (name -> default or :class:`Param`) the one declaration of the keyword
    parameters its ``__init__`` takes: constructing it, from a run or directly from Python, fills the missing
    ones with their defaults and checks every value against its rule (a ConfigError naming the class and the
    key) before its ``__init__`` runs. The client and aggregator base classes call it for each subclass."""
    own = cls.__dict__.get("PARAMS")
    if own is None:
        return
    defaults, rules = split_params(own)
    init = cls.__init__

    @functools.wraps(init)
    def checked(self: Any, *args: Any, **kwargs: Any) -> None:
        for key, value in defaults.items():
            kwargs.setdefault(key, value)
        check_all(cls.__name__, kwargs, rules)
        init(self, *args, **kwargs)

    cls.__init__ = checked
