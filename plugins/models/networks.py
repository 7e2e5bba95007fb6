"""The models: generic ones (linear, MLP) and the FedEM paper's (CNNs, MobileNetV2, next-character LSTM)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from fedbench.plugin.params import Param
from fedbench import ModelSpec, hookimpl
from fedbench.errors import ConfigError


def linear(input_shape: tuple[int, ...], n_outputs: int, bias: bool = True) -> nn.Module:
    """A linear layer on the flattened input (logistic/softmax regression)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_outputs, bias=bias))


def mlp(input_shape: tuple[int, ...], n_outputs: int, hidden: int = 64, batch_norm: bool = False) -> nn.Module:
    """One hidden ReLU layer on the flattened input, optionally batch-normalised."""
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(math.prod(input_shape), hidden)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(), nn.Linear(hidden, n_outputs)]
    model = nn.Sequential(*layers)
    model.representation = str(len(layers) - 2)  # the hidden layer's output (after its ReLU)
    return model


class Cifar10CNN(nn.Module):
    """The CNN of the FedEM paper's CIFAR experiments' baselines (McMahan et al. 2017 style):
    conv 3->32 k5, max-pool 2, conv 32->64 k5, max-pool 2, fc 1600->2048, fc 2048->classes."""

    def __init__(self, input_shape: tuple[int, ...], n_outputs: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 64 * ((((height - 4) // 2) - 4) // 2) * ((((width - 4) // 2) - 4) // 2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, 2048), nn.ReLU(), nn.Linear(2048, n_outputs))
        #: the representation a representation-based method compares: the 2048 units before the classifier
        self.representation = "head.2"

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.head(self.features(x))


def cifar10cnn(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"cifar10cnn expects (channels, height, width) inputs, got shape {input_shape}")
    return Cifar10CNN(input_shape, n_outputs)


def femnist_cnn(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """The paper's FEMNIST/EMNIST CNN: conv 1->32 k5, pool, conv 32->64 k5, pool, fc 1024->2048, fc
    2048->classes (the same two-conv, two-dense shape as :class:`Cifar10CNN`, sized for 28x28 grey images)."""
    if len(input_shape) != 3 or input_shape[1] < 12 or input_shape[2] < 12:
        raise ValueError(f"femnist_cnn expects (channels, height, width) images of at least 12x12, got shape {input_shape}")
    return Cifar10CNN(input_shape, n_outputs)


class NextCharLSTM(nn.Module):
    """The paper's Shakespeare model: embedding, stacked LSTM, and a dense layer on every step's output
    (``positions = "all"``, the authors' model: the logits of the character after each position of the
    window) or on the last step's only (``"last"``: the next character after the window, LEAF's task)."""

    def __init__(self, vocab: int, n_outputs: int, embed: int, hidden: int, layers: int, positions: str = "all") -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, n_outputs)
        self.positions = positions

    def forward(self, x):  # noqa: ANN001, ANN201
        out, _ = self.lstm(self.embed(x.long()))
        return self.head(out if self.positions == "all" else out[:, -1])


def next_char_lstm(
    input_shape: tuple[int, ...], n_outputs: int, vocab: int = 100, embed: int = 8, hidden: int = 256, layers: int = 2,
    positions: str = "all",
) -> nn.Module:
    if len(input_shape) != 1:
        raise ValueError(f"next_char_lstm expects sequences of character ids (one dimension), got shape {input_shape}")
    return NextCharLSTM(vocab, n_outputs, embed, hidden, layers, positions)


def mobilenet_v2(input_shape: tuple[int, ...], n_outputs: int, weights_path: str = "", width_mult: float = 1.0) -> nn.Module:
    """MobileNetV2 with ``n_outputs`` classes (the paper's CIFAR model): torchvision's network, layer for
    layer and draw for draw, built without importing torchvision (:mod:`fedbench_plugins.models.mobilenet`).

    ``weights_path``: a local file with torchvision's ImageNet ``state_dict``
    (e.g. ``mobilenet_v2-b0353104.pth``); every layer but the classifier is
    loaded from it, and the classifier starts as a fresh ``nn.Linear``, as the authors' code replaces
    it (``model.classifier[1] = nn.Linear(...)``). Weights are never fetched from the internet.
    """
    from fedbench_plugins.models.mobilenet import MobileNetV2

    if len(input_shape) != 3:
        raise ValueError(f"mobilenet_v2 expects (channels, height, width) images, got shape {input_shape}")
    model = MobileNetV2(n_outputs, width_mult=width_mult)
    if input_shape[0] != 3:
        first = model.features[0][0]
        model.features[0][0] = nn.Conv2d(input_shape[0], first.out_channels, 3, stride=2, padding=1, bias=False)
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"mobilenet_v2: weights file {str(path)!r} not found; download torchvision's ImageNet "
                "MobileNet_V2_Weights file on a machine with internet and pass its path as model.weights_path"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("classifier.")]:
            raise ConfigError(
                f"mobilenet_v2: {path} does not match torchvision's MobileNetV2 (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}); give torchvision's ImageNet state_dict for width_mult={width_mult}"
            )
        model.classifier[1].reset_parameters()  # a fresh layer's default draw, as the authors' new nn.Linear
    return model


def mobilenet_v2_note(params: dict) -> tuple[str, str] | None:
    """CIFAR cells of the FedEM paper start MobileNetV2 from ImageNet weights: say so when a run does not."""
    if params.get("weights_path"):
        return None
    return (
        "from scratch",
        "mobilenet_v2 starts from scratch: no ImageNet weights given, but the FedEM authors start from them "
        "(pretrained=True); put torchvision's mobilenet_v2-b0353104.pth on this machine and pass "
        "--set model.weights_path=PATH (never downloaded at run time)",
    )


@hookimpl
def fedbench_models() -> list[ModelSpec]:
    return [
        ModelSpec(name="linear", doc="linear layer on the flattened input", params={"bias": True}, build=linear),
        ModelSpec(
            name="mlp",
            doc="one hidden ReLU layer on the flattened input (optional BatchNorm); representation: the hidden layer",
            params={"hidden": Param(64, low=1), "batch_norm": False},
            build=mlp,
        ),
        ModelSpec(name="cifar10cnn", doc="2 conv + 2 dense layers for 32x32 colour images (fc 1600->2048); representation: the 2048 units", build=cifar10cnn),
        ModelSpec(name="femnist_cnn", doc="2 conv + 2 dense layers for 28x28 grey images (fc 1024->2048); representation: the 2048 units", build=femnist_cnn),
        ModelSpec(
            name="mobilenet_v2",
            doc="torchvision MobileNetV2 (BatchNorm); optional ImageNet weights from a local file",
            params={"weights_path": "", "width_mult": Param(1.0, low=0.0, low_open=True)},
            build=mobilenet_v2,
            init_note=mobilenet_v2_note,
        ),
        ModelSpec(
            name="next_char_lstm",
            doc="embedding 8, 2-layer LSTM 256, dense: next-character logits at every position (or the last: positions=last)",
            params={
                "vocab": Param(100, low=1), "embed": Param(8, low=1), "hidden": Param(256, low=1), "layers": Param(2, low=1),
                "positions": Param("all", choices=("all", "last")),
            },
            build=next_char_lstm,
        ),
    ]
