"""Run configuration: typed, frozen, validated, hashable.

A :class:`RunConfig` is fully resolved (every default filled in from the
method preset and the plugins' specs), so its hash identifies the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fedbench.errors import ConfigError
from fedbench.plugin.params import Param

LR_SCHEDULES = ("multistep", "constant")
ENGINES = ("auto", "vectorized", "sequential")
#: where clients keep what lasts between rounds (:mod:`fedbench.runs.client_state`)
CLIENT_STATES = ("auto", "memory", "disk")


#: points on a learning curve when ``eval_every`` is not set
EVAL_POINTS = 20


def setting(default: Any, **rule: Any) -> Any:
    """A training setting: its default and its rule (:class:`fedbench.plugin.params.Param`), declared once; the
    dataclass checks every value against its rule when it is built."""
    return field(default=default, metadata={"param": Param(default, **rule)})


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the federated training loop shared by every method.

    ``lr_schedule="multistep"`` divides the learning rate by 10 at rounds
    ``rounds // 2`` and ``3 * (rounds // 4)`` (the FedEM authors' schedule).
    ``keep_optimizer_state`` keeps each client's SGD momentum buffers between
    the rounds it takes part in, as the authors' clients (which own their
    optimizers) do. ``unseen_fraction`` of the clients (the same ones for
    every training seed) never train; at each evaluation they adapt to the
    trained models (:meth:`fedbench.fl.client.Client.adapt`) and are scored
    separately (``unseen_*`` metrics, the paper's Table 3).
    """

    rounds: int = setting(200, low=1, integer=True)
    batch_size: int = setting(128, low=1, integer=True)
    local_epochs: int = setting(1, low=1, integer=True)
    lr: float = setting(0.1, low=0.0, low_open=True)
    momentum: float = setting(0.9, low=0.0, high=1.0, high_open=True)
    weight_decay: float = setting(5e-4, low=0.0)
    lr_schedule: str = setting("multistep", choices=LR_SCHEDULES)
    participation: float = setting(1.0, low=0.0, high=1.0, low_open=True)
    #: evaluate every this many rounds (and at the last); None: ``max(1, rounds // 20)``, about 20 points on
    #: any curve (every 10 rounds at the default 200, every round for a run of 20 or fewer)
    eval_every: int | None = setting(None, low=1, integer=True)
    keep_optimizer_state: bool = setting(True, choices=(True, False))
    unseen_fraction: float = setting(0.0, low=0.0, high=1.0, high_open=True)
    #: evaluate the initial models before round 1 (round 0 of the curves), as the authors' aggregator
    #: does when it is built; it matters beyond the curves where an evaluation changes state (FedAvg+'s
    #: carried tuning momentum, FedEM's warm-started pi of unseen clients)
    eval_at_start: bool = setting(True, choices=(True, False))
    #: keep the model's 4-D tensors (convolution weights) channels-last in memory (``torch.channels_last``),
    #: which torch's CPU convolutions (oneDNN) run faster (results/paper-cost.md: ``benchmarks/paper_speed.py
    #: --layouts default,channels_last``); the same network and flat parameter order, the convolutions summing in
    #: another order (numbers agree to rounding, not bit for bit, with the default layout, the authors' one). The
    #: one-at-a-time engine and every evaluation use it; the batched engine trains from flat rows in the default
    #: layout
    channels_last: bool = setting(False, choices=(True, False))

    def __post_init__(self) -> None:
        if self.eval_every is None and isinstance(self.rounds, int) and not isinstance(self.rounds, bool):
            object.__setattr__(self, "eval_every", max(1, self.rounds // EVAL_POINTS))
        for f in fields(self):  # each setting's rule, declared with its default (the key and its value in errors)
            f.metadata["param"].check("", f.name, getattr(self, f.name))

    def learning_rate(self, round_: int) -> float:
        """The learning rate used in (0-based) round ``round_``."""
        if self.lr_schedule == "constant":
            return self.lr
        # a milestone at round 0 (fewer than 4 rounds) would train a short run at lr / 10 or lr / 100 from the start
        milestones = [m for m in (self.rounds // 2, 3 * (self.rounds // 4)) if m > 0]
        return self.lr * 0.1 ** sum(round_ >= m for m in milestones)

    def is_eval_round(self, round_: int) -> bool:
        """Evaluate after (0-based) round ``round_``: every ``eval_every`` rounds and the last."""
        return (round_ + 1) % self.eval_every == 0 or round_ + 1 == self.rounds


#: training settings added after results were first stored, with the default that reproduces the
#: earlier behaviour: left out of the run id while at that default, so stored results stay valid
LATER_TRAIN_KEYS: dict[str, Any] = {"unseen_fraction": 0.0, "eval_at_start": False, "channels_last": False}

Params = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers, fully resolved."""

    dataset: str
    method: str
    model: str
    client: str
    aggregator: str
    n_learners: int
    seed: int
    train: TrainConfig
    dataset_params: Params = ()
    model_params: Params = ()
    client_params: Params = ()
    aggregator_params: Params = ()
    #: where to run; not part of the run id
    device: str = field(default="cpu", compare=False)
    #: auto | vectorized | sequential; not part of the run id (both engines compute the same numbers)
    engine: str = field(default="auto", compare=False)
    #: auto | memory | disk: where clients keep their momentum and personal models between rounds
    #: (:mod:`fedbench.runs.client_state`); not part of the run id (the same numbers either way)
    client_state: str = field(default="auto", compare=False)
    #: fingerprint of the code that computes this run (:mod:`fedbench.runs.fingerprint`); part of the run id
    code: str = ""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.client_state not in CLIENT_STATES:
            raise ConfigError(f"client_state must be one of {', '.join(CLIENT_STATES)}, got {self.client_state!r}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("dataset_params", "model_params", "client_params", "aggregator_params"):
            out[key] = dict(getattr(self, key))
        return out

    @property
    def config_id(self) -> str:
        """Hash of the resolved configuration alone (no device, engine or code): the same
        experiment computed by other code has the same ``config_id`` and another ``run_id``."""
        return config_id_of(self.to_dict())

    @property
    def run_id(self) -> str:
        """Hash of the configuration and the code fingerprint: a run's key in the results store."""
        return hashlib.sha256(f"{self.config_id}:{self.code}".encode()).hexdigest()[:16]


def config_id_of(config: Mapping[str, Any]) -> str:
    """:attr:`RunConfig.config_id` of a configuration dict (``to_dict()``, or one read back from the
    results store's JSON: the JSON round trip gives the same hash)."""
    body = json.loads(json.dumps(dict(config), default=str))
    for key in ("device", "engine", "code"):
        body.pop(key, None)
    for key, default in LATER_TRAIN_KEYS.items():
        if body["train"].get(key, default) == default:
            body["train"].pop(key, None)
    blob = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_value(text: str) -> Any:
    """A TOML scalar/array if ``text`` parses as one, else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def flat_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Settings in their one spelling, ``GROUP.KEY``: nested tables or dicts (``{"dataset": {"alpha": 0.3}}``,
    TOML's unquoted ``client.mu = 0.5``) and Python's ``dataset__alpha`` become ``dataset.alpha``."""
    out: dict[str, Any] = {}
    for key, value in (settings or {}).items():
        key = str(key).replace("__", ".")
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in flat_settings(value).items()})
        else:
            out[key] = value
    return out


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.1", "dataset.n_clients=10"]`` -> ``{"lr": 0.1, "dataset.n_clients": 10}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--set expects key=value (e.g. --set lr=0.05), got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def coerce(owner: str, key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of ``default``, or a ConfigError naming both."""
    if default is None:
        return value
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind in (list, tuple):
        if isinstance(value, (list, tuple)):
            return tuple(value)
    elif isinstance(value, kind):
        return value
    raise ConfigError(
        f"{owner}: {key} expects {kind.__name__} (default {default!r}), got {type(value).__name__} {value!r}"
    )


def merge_params(
    owner: str, defaults: Mapping[str, Any], overrides: Mapping[str, Any], rules: Mapping[str, Any] | None = None,
    registry: Any = None,
) -> dict[str, Any]:
    """Defaults updated by overrides; an unknown key fails naming the known ones, a value of the
    wrong type or outside its declared range (``rules``, :class:`fedbench.plugin.params.Param`) fails naming it."""
    out = dict(defaults)
    for key, value in overrides.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(f"{owner} has no parameter {key!r}; its parameters are: {known}")
        out[key] = coerce(owner, key, value, defaults[key])
        if rules and key in rules:
            rules[key].check(owner, key, out[key], registry)
    return out


TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))
