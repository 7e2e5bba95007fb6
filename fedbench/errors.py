"""The error hierarchy: every message names the broken rule, the bad value and a fix.

The CLI prints a :class:`FedbenchError` as one line and exits non-zero; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FedbenchError(Exception):
    """Base of all errors fedbench reports to a user as one line."""


class ConfigError(FedbenchError):
    """A configuration value, override or suite file is malformed."""


class UnknownPluginError(ConfigError):
    """A name was looked up in the registry and no plugin provides it."""


class PluginError(FedbenchError):
    """A plugin failed to load or raised inside one of its hooks."""


class DataError(FedbenchError):
    """A data set is missing, malformed or cannot be built as asked."""


class ResultsError(FedbenchError):
    """The results store cannot be opened or written."""


class ClaimLost(FedbenchError):
    """This process's claim on a run was taken over as stale (it stood still past the heartbeat's limit: stopped
    with SIGSTOP or Ctrl-Z, or a frozen machine); its attempt stops at once, the new owner's result counts."""


class DivergedError(FedbenchError):
    """A run's loss became NaN or infinite; the run is stopped and marked diverged."""

    def __init__(self, round_: int, value: float) -> None:
        super().__init__(
            f"run diverged at round {round_}: training loss is {value}; "
            "lower the learning rate (--set lr=...) or check the data"
        )
        self.round = round_
        self.value = value
