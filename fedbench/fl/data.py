"""Federated data containers: every client's samples as slices of pooled tensors.

Train and test samples of all clients are stored once, contiguously, client
after client; a client's data are views (index ranges), never copies. This is
what lets an engine move a whole data set to a device in one copy and batch by
index.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fedbench.errors import DataError

TASKS = ("binary", "multiclass")


def default_data_root() -> Path:
    """Where on-disk data sets live unless ``--data-root`` says otherwise:
    ``$FEDBENCH_DATA_ROOT`` or ``~/.cache/fedbench``."""
    return Path(os.environ.get("FEDBENCH_DATA_ROOT") or Path.home() / ".cache" / "fedbench")


def resolve_data_root(data_root: str | Path | None) -> Path:
    """``data_root`` as a Path, or :func:`default_data_root` when it is None."""
    return Path(data_root) if data_root is not None else default_data_root()


def segment_sum(values: torch.Tensor, sizes: Sequence[int] | torch.Tensor, sequential: bool | None = None) -> torch.Tensor:
    """The sum of each run of consecutive rows of ``values`` (run i: the next ``sizes[i]`` rows; pooled samples
    are client after client), the same numbers on every call: on a CPU by ``index_add_`` (a sequential sum);
    on other devices, where ``index_add_`` adds with atomics in a varying order (CUDA), as differences of a
    float64 running sum, so that one seed gives one result there too (``sequential`` picks one explicitly)."""
    sizes = torch.as_tensor(sizes, dtype=torch.long, device=values.device)
    if sequential if sequential is not None else values.device.type == "cpu":
        owner = torch.repeat_interleave(torch.arange(len(sizes), device=values.device), sizes)
        return torch.zeros((len(sizes), *values.shape[1:]), dtype=values.dtype, device=values.device).index_add_(0, owner, values)
    running = torch.cat([torch.zeros((1, *values.shape[1:]), dtype=torch.float64, device=values.device),
                         values.double().cumsum(0)])
    ends = sizes.cumsum(0)
    return (running[ends] - running[ends - sizes]).to(values.dtype)


def decode_inputs(table: torch.Tensor, x: torch.Tensor, sample_ndim: int) -> torch.Tensor:
    """Inputs stored as integer codes -> the model's inputs: ``table[c, v]`` for each value ``v`` of channel
    ``c`` (the first axis of a sample of ``sample_ndim`` axes; a one-row table serves every channel). A lookup,
    so the value of each code is what the data set computed once when it wrote the table, bit for bit on every
    device and batch size (an image data set stores uint8 pixels, a quarter of their float32 size). Works on a
    batch or on one sample, and under ``torch.func.vmap``."""
    if x.is_floating_point():
        raise DataError(f"inputs decoded through a table must be integer codes, got {x.dtype}")
    channels, codes = table.shape
    index = x.to(torch.int32)
    if channels > 1:
        shape = (channels,) + (1,) * (sample_ndim - 1)
        index = index + torch.arange(0, channels * codes, codes, dtype=torch.int32, device=x.device).view(shape)
    return table.reshape(-1)[index]


class InputDecoder:
    """A model's forward pre-hook that decodes stored codes (:func:`decode_inputs`) before the model sees them:
    attached to every model of a run whose data set has an ``input_table`` (:meth:`FederatedData.attach`), so
    every path that calls the model (both engines, evaluation, a method's own code) sees the same inputs."""

    def __init__(self, table: torch.Tensor, sample_ndim: int) -> None:
        self.table, self.sample_ndim = table, sample_ndim

    def __call__(self, module: torch.nn.Module, args: tuple) -> tuple:
        return (decode_inputs(self.table, args[0], self.sample_ndim), *args[1:])


@dataclass(frozen=True)
class ClientData:
    """One client's train and test tensors (views into the pooled tensors)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    #: the data set's training protocol drops an incomplete last batch (:attr:`FederatedData.drop_last`)
    drop_last: bool = False
    #: the inputs are integer codes the model decodes (:attr:`FederatedData.input_table`), or None
    input_table: torch.Tensor | None = None

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (this client's samples) as the model sees them (:meth:`FederatedData.decode`)."""
        return x if self.input_table is None else decode_inputs(self.input_table, x, self.train_x.dim() - 1)

    @property
    def n_train(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_y.shape[0])


def _offsets(sizes: Sequence[int]) -> torch.Tensor:
    out = torch.zeros(len(sizes) + 1, dtype=torch.long)
    out[1:] = torch.cumsum(torch.as_tensor(list(sizes), dtype=torch.long), 0)
    return out


@dataclass(frozen=True)
class DataShape:
    """What a data set's samples look like, known from its parameters without reading a file
    (:attr:`fedbench.plugin.specs.DatasetSpec.shape`): one sample's input shape and dtype, the logits a model
    must give (one for a binary task, else one per class) and one label's shape (``()``, or ``(80,)`` for a
    label per position of an 80-character window)."""

    input_shape: tuple[int, ...]
    n_outputs: int
    task: str = "multiclass"
    label_shape: tuple[int, ...] = ()
    input_dtype: torch.dtype = torch.float32

    @classmethod
    def of(cls, data: FederatedData) -> DataShape:
        """The shape the model sees: decoded inputs' dtype when the data set stores codes (``input_table``)."""
        dtype = data.input_table.dtype if data.input_table is not None else data.train_x.dtype
        return cls(data.input_shape, data.n_outputs, data.task, tuple(data.train_y.shape[1:]), dtype)

    def __str__(self) -> str:
        dtype = "" if self.input_dtype == torch.float32 else f" {str(self.input_dtype).removeprefix('torch.')}"
        label = f", labels {self.label_shape}" if self.label_shape else ""
        return f"inputs {self.input_shape}{dtype}, {self.n_outputs} {'logit' if self.n_outputs == 1 else 'logits'}{label}"


@dataclass(frozen=True)
class FederatedData:
    """A federated data set: pooled tensors plus per-client offsets.

    ``task`` is ``"binary"`` (labels 0/1, one logit) or ``"multiclass"``
    (integer labels in ``[0, num_classes)``, one per sample or a sequence per
    sample: see :class:`fedbench.fl.tasks.MulticlassTask`). Client ``i``'s train
    samples are ``train_x[train_offsets[i]:train_offsets[i+1]]``; likewise for
    test. ``class_weights`` (multiclass only, ``(num_classes,)``): the weight of
    each label in the loss, None for none. ``drop_last``: local training leaves
    out each epoch's incomplete last batch of a client that has more than one
    batch (a data set's own protocol, set by its loader; docs/fidelity.md says
    which data sets do and why). ``input_table`` (``(channels, codes)``, floating): the inputs are stored
    as integer codes and each model decodes them batch by batch (:func:`decode_inputs`, :meth:`attach`):
    ``table[c, v]`` is the model's input for value ``v`` in channel ``c`` (one row: every channel).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    train_offsets: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_offsets: torch.Tensor
    task: str
    num_classes: int
    class_weights: torch.Tensor | None = None
    drop_last: bool = False
    input_table: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.class_weights is not None and (self.task != "multiclass" or tuple(self.class_weights.shape) != (self.num_classes,)):
            raise DataError(f"class_weights must be a ({self.num_classes},) tensor of a multiclass data set")
        for split in ("train", "test"):
            x, y, off = (getattr(self, f"{split}_{k}") for k in ("x", "y", "offsets"))
            if x.shape[0] != y.shape[0] or int(off[-1]) != y.shape[0] or int(off[0]) != 0:
                raise DataError(
                    f"{split} tensors disagree: {x.shape[0]} inputs, {y.shape[0]} labels, "
                    f"offsets end at {int(off[-1])}; build FederatedData with from_clients()"
                )
            if bool((off[1:] < off[:-1]).any()):
                raise DataError(f"{split} offsets must be non-decreasing")
        if self.train_offsets.shape != self.test_offsets.shape:
            raise DataError("train and test must cover the same number of clients")
        if self.input_table is not None:
            self._check_table()

    def _check_table(self) -> None:
        table = self.input_table
        if table.dim() != 2 or not table.is_floating_point():
            raise DataError(f"input_table must be a floating (channels, codes) tensor, got {table.dtype} {tuple(table.shape)}")
        for x in (self.train_x, self.test_x):
            if x.is_floating_point() or x.dtype == torch.bool:
                raise DataError(f"inputs decoded through input_table must be integer codes, got {x.dtype}")
            if table.shape[0] > 1 and (x.dim() < 2 or x.shape[1] != table.shape[0]):
                raise DataError(f"input_table has {table.shape[0]} rows (channels) but samples are {tuple(x.shape[1:])}")
            if x.numel() and not 0 <= int(x.min()) <= int(x.max()) < table.shape[1]:
                raise DataError(f"input codes span {int(x.min())}..{int(x.max())}, outside input_table's "
                                f"{table.shape[1]} codes")

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (samples of this data set) as the model sees them: decoded when the data set stores codes."""
        return x if self.input_table is None else decode_inputs(self.input_table, x, len(self.input_shape))

    def attach(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` decoding this data set's stored inputs itself (a forward pre-hook, :class:`InputDecoder`);
        unchanged when the inputs are stored as the model takes them."""
        if self.input_table is not None:
            model.register_forward_pre_hook(InputDecoder(self.input_table, len(self.input_shape)))
        return model

    @classmethod
    def from_clients(
        cls,
        train: Sequence[tuple[torch.Tensor, torch.Tensor]],
        test: Sequence[tuple[torch.Tensor, torch.Tensor]],
        task: str,
        num_classes: int,
        class_weights: torch.Tensor | None = None,
        drop_last: bool = False,
        input_table: torch.Tensor | None = None,
    ) -> FederatedData:
        """Pool per-client ``(x, y)`` pairs into one container."""
        if len(train) != len(test) or not train:
            raise DataError(f"need the same non-zero number of train and test clients, got {len(train)} and {len(test)}")
        return cls(
            train_x=torch.cat([x for x, _ in train]),
            train_y=torch.cat([y for _, y in train]),
            train_offsets=_offsets([len(y) for _, y in train]),
            test_x=torch.cat([x for x, _ in test]),
            test_y=torch.cat([y for _, y in test]),
            test_offsets=_offsets([len(y) for _, y in test]),
            task=task,
            num_classes=num_classes,
            class_weights=class_weights,
            drop_last=drop_last,
            input_table=input_table,
        )

    @property
    def n_clients(self) -> int:
        return int(self.train_offsets.shape[0] - 1)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def n_outputs(self) -> int:
        """Logits a model must produce: one for a binary task, else one per class."""
        return 1 if self.task == "binary" else self.num_classes

    def train_sizes(self) -> torch.Tensor:
        return self.train_offsets[1:] - self.train_offsets[:-1]

    def test_sizes(self) -> torch.Tensor:
        return self.test_offsets[1:] - self.test_offsets[:-1]

    def client(self, i: int) -> ClientData:
        """Client ``i``'s data, as views."""
        if not 0 <= i < self.n_clients:
            raise IndexError(f"client index {i} out of range for {self.n_clients} clients")
        a, b = int(self.train_offsets[i]), int(self.train_offsets[i + 1])
        c, d = int(self.test_offsets[i]), int(self.test_offsets[i + 1])
        return ClientData(self.train_x[a:b], self.train_y[a:b], self.test_x[c:d], self.test_y[c:d], self.drop_last,
                          self.input_table)

    def select(self, clients: Sequence[int]) -> FederatedData:
        """A federation of the given clients, in the given order (client ``j`` is old client ``clients[j]``)."""
        parts = [self.client(i) for i in clients]
        return FederatedData.from_clients(
            [(c.train_x, c.train_y) for c in parts], [(c.test_x, c.test_y) for c in parts], self.task, self.num_classes,
            self.class_weights, self.drop_last, self.input_table,
        )

    def to(self, device: torch.device | str) -> FederatedData:
        """The same data on ``device`` (one copy per pooled tensor)."""
        return FederatedData(
            self.train_x.to(device),
            self.train_y.to(device),
            self.train_offsets,
            self.test_x.to(device),
            self.test_y.to(device),
            self.test_offsets,
            self.task,
            self.num_classes,
            self.class_weights,
            self.drop_last,
            self.input_table.to(device) if self.input_table is not None else None,
        )
