"""FEMNIST and Shakespeare from LEAF's json files, naturally partitioned (the FedEM paper's setting).

LEAF writes ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}``
files; we read every ``*.json`` in ``ROOT/NAME/all_data/`` (or
``ROOT/NAME/data/all_data/``, LEAF's own layout).

FEMNIST: one client per writer; of the writers with more than 2 samples, a
random ``int(fraction * N)`` (the paper keeps 15 %: 539 of LEAF's 3,597); each
writer's samples shuffled, the first ``floor(0.8 n)`` train, the rest test
(the authors' order and rounding). A sample is a 28x28 image given as 784 floats in [0, 1]; 62 classes.

Shakespeare: one client per speaking role; a sample is an 80-character window.
Characters are encoded by their index in Python's ``string.printable`` (the
100-character vocabulary of the paper's model), stored as one byte each; a
character outside it is encoded as a space. By default the FedEM authors' protocol:
  - ``targets = "window"``: the label of a window is the character after each of
    its positions (the window shifted by one, then LEAF's next character), and the
    model (``next_char_lstm``, ``positions = "all"``) predicts all of them; a
    sample's loss and accuracy are the means over its 80 positions.
    ``"next"`` is LEAF's task (the next character only; use ``model.positions=last``).
  - ``class_weights = "authors"``: the authors' per-character cross-entropy weights
    (training, the EM step and the evaluation loss); ``"none"`` for plain cross-entropy.
  - ``split = "text"``: each role's text is cut once, its last 20 % test text, and
    only windows wholly on one side are used, so roles too short to have a window on
    both sides are dropped (the authors' loader skips them the same way);
    ``"windows"``: the last 20 % of the windows are test windows (they overlap the
    train text by up to 80 characters) and every role with two windows is kept.
Where LEAF's per-role text files are under the data root
(``ROOT/shakespeare[/data]/raw_data/by_play_and_character/*.txt``, which LEAF's
``preprocess_shakespeare.py`` writes before its json), the authors' own rule is
applied to them literally (``source = "text"``, :func:`authors_role_split`): the
role's lines cut 80/20 by lines, each side's lines joined with spaces, every
80-character window of a side a sample, a role kept only when both sides have
one (778 roles on the real files). Without them, LEAF's json is read
(``source = "json"``), which keeps no line breaks, so the cut is by characters
and the role count differs (838 on the real json); a run says so once.
"""

from __future__ import annotations

import json
import re
import string
import warnings
from pathlib import Path

import numpy as np
import torch

from fedbench.plugin.params import Param
from fedbench import DatasetSpec, hookimpl
from fedbench.fl.data import DataShape, FederatedData, resolve_data_root
from fedbench.errors import DataError

#: LEAF's output folders, relative to the data root, per data set
FOLDERS = {name: (f"{name}/all_data", f"{name}/data/all_data") for name in ("femnist", "shakespeare")}
VOCAB = string.printable


def _bad_file(f: Path, e: Exception) -> DataError:
    return DataError(f"{f} is not a LEAF json file ({type(e).__name__}: {e}); re-run LEAF's preprocessing")


def _leaf_docs(files: list[Path]):  # noqa: ANN202 - (file, parsed json) one file at a time
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except ValueError as e:  # (json.JSONDecodeError is one)
            raise _bad_file(f, e) from e
        yield f, doc
        del doc


def count_leaf(files: list[Path]) -> dict[str, int]:
    """user -> number of samples over LEAF json files (a first pass: nothing is kept but the counts)."""
    counts: dict[str, int] = {}
    for f, doc in _leaf_docs(files):
        try:
            for u in doc["users"]:
                counts[u] = counts.get(u, 0) + len(doc["user_data"][u]["y"])
        except (KeyError, TypeError) as e:
            raise _bad_file(f, e) from e
    return counts


def read_leaf(files: list[Path], convert=None, only: set[str] | None = None) -> dict[str, tuple[list, list]]:  # noqa: ANN001
    """user -> (chunks of x, chunks of y) from LEAF json files, in file order (``only``: just these users).

    ``convert(x, y)`` turns one file's lists for a user into compact arrays as each file is read, so
    that the whole data set never sits in memory as Python lists (LEAF's full FEMNIST is 817,851 x
    784 floats: about 20 GB as Python floats, 2.6 GB as float32); with ``only``, the other users are
    never converted (FEMNIST keeps 15 % of its writers: :func:`count_leaf` first, then this)."""
    users: dict[str, tuple[list, list]] = {}
    for f, doc in _leaf_docs(files):
        try:
            for u in doc["users"]:
                if only is not None and u not in only:
                    continue
                d = doc["user_data"][u]
                x, y = (d["x"], d["y"]) if convert is None else convert(d["x"], d["y"])
                xs, ys = users.setdefault(u, ([], []))
                xs.append(x)
                ys.append(y)
        except (KeyError, TypeError, ValueError) as e:
            raise _bad_file(f, e) from e
    return users


def _femnist_arrays(x: list, y: list) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(x, dtype=np.float32).reshape(-1, 784), np.asarray(y, dtype=np.int64)


def find_leaf_files(name: str, data_root: Path | None) -> list[Path]:
    """The LEAF json files of ``name``, or a DataError saying where they were looked for and how to make them."""
    root = resolve_data_root(data_root)
    folders = [root / f for f in FOLDERS[name]]
    files = next((sorted(f.glob("*.json")) for f in folders if f.is_dir() and any(f.glob("*.json"))), [])
    if not files:
        raise DataError(
            f"{name}: no LEAF json files in {' or '.join(str(f) for f in folders)}; run LEAF's "
            f"{name} preprocessing (./preprocess.sh) and copy data/all_data there, or pass --data-root"
        )
    return files


def check(name: str, data_root: Path | None) -> str | None:
    """None when ``name``'s LEAF files are present (Shakespeare: its json or its role text files), else the
    one-line error."""
    if name == "shakespeare" and find_role_files(data_root):
        return None
    try:
        find_leaf_files(name, data_root)
    except DataError as e:
        return str(e)
    return None


def _keep_users(users: dict, fraction: float, rng: np.random.Generator, rounding=round) -> list[str]:  # noqa: ANN001
    """A random ``rounding(fraction * len(users))`` of the users (at least one), in sorted order."""
    names = sorted(users)
    return [names[i] for i in sorted(rng.choice(len(names), size=max(1, int(rounding(fraction * len(names)))), replace=False))]


def _check_fractions(name: str, fraction: float, test_fraction: float) -> None:
    if not 0 < fraction <= 1 or not 0 < test_fraction < 1:
        raise DataError(f"{name}: need 0 < fraction <= 1 and 0 < test_fraction < 1, got {fraction}, {test_fraction}")


def load_femnist(
    data_root: Path | None, fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0, normalize: bool = True
) -> FederatedData:
    files = find_leaf_files("femnist", data_root)
    _check_fractions("femnist", fraction, test_fraction)
    # the authors' order (data_to_tensor.py:59, generate_data.py:83): writers with more than 2 images, then
    # int(fraction * their number) of them (539 of LEAF's 3,597), each cut floor(0.8 n) / the rest as
    # sklearn's train_test_split(train_size=0.8) does. The writers are chosen from a first pass that keeps
    # only their sample counts, so only the kept 15 % are ever converted (peak memory, results/paper-cost.md)
    eligible = {u: n for u, n in count_leaf(files).items() if n > 2}
    if not eligible:
        raise DataError("femnist: no writer has more than 2 samples; these are not LEAF's FEMNIST files")
    rng = np.random.default_rng(seed)
    kept = _keep_users(eligible, fraction, rng, rounding=int)
    users = read_leaf(files, _femnist_arrays, only=set(kept))
    train, test = [], []
    for user in kept:
        x, y = np.concatenate(users[user][0]), np.concatenate(users[user][1])
        order = rng.permutation(len(y))
        n_test = len(y) - int(np.floor((1 - test_fraction) * len(y)))
        xs = torch.from_numpy(x[order]).view(-1, 1, 28, 28)
        if normalize:  # the FedEM authors' transform, (x - 0.1307) / 0.3081
            xs = (xs - 0.1307) / 0.3081
        ys = torch.from_numpy(y[order])
        train.append((xs[: len(ys) - n_test], ys[: len(ys) - n_test]))
        test.append((xs[len(ys) - n_test :], ys[len(ys) - n_test :]))
    if not train:
        raise DataError("femnist: no writer with at least 2 samples was kept; raise fraction")
    return FederatedData.from_clients(train, test, task="multiclass", num_classes=62)


#: character code (ASCII) -> id in VOCAB; everything else is a space
_IDS = np.full(128, VOCAB.index(" "), dtype=np.uint8)
_IDS[[ord(ch) for ch in VOCAB]] = np.arange(len(VOCAB), dtype=np.uint8)


def encode(text: str) -> np.ndarray:
    """Character ids (uint8) in :data:`VOCAB` (``string.printable``); unknown characters become a space.
    One table lookup over the whole text: LEAF's Shakespeare is millions of 80-character windows."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(codes < 128, _IDS[np.minimum(codes, 127)], _IDS[ord(" ")]).astype(np.uint8)


#: the FedEM authors' Shakespeare class weights (their ``CHARACTERS_WEIGHTS``, published in
#: omarfoq/FedEM ``utils/constants.py``, times their factor 8): a character's weight in the
#: cross-entropy; every character not listed weighs 1 * 8. Protocol data, as the EMNIST
#: normalisation constants are.
AUTHORS_CHARACTER_WEIGHTS = {
    "\n": 0.43795308843799086, " ": 0.042500849608091536, ",": 0.6559597911540539, ".": 0.6987226398690805,
    "I": 0.9777491725556848, "a": 0.2226022051965085, "c": 0.813311655455682, "d": 0.4071860494572223,
    "e": 0.13455606165058104, "f": 0.7908671114133974, "g": 0.9532922255751889, "h": 0.2496906467588955,
    "i": 0.27444893060347214, "l": 0.37296488139109546, "m": 0.569937324017103, "n": 0.2520734570378263,
    "o": 0.1934141300462555, "r": 0.26035705948768273, "s": 0.2534775933879391, "t": 0.1876471355731429,
    "u": 0.47430062920373184, "w": 0.7470615815733715, "y": 0.6388302610200002,
}
AUTHORS_WEIGHT_SCALE = 8.0


def authors_class_weights() -> torch.Tensor:
    """The authors' per-character loss weights over :data:`VOCAB`."""
    w = torch.ones(len(VOCAB))
    for ch, value in AUTHORS_CHARACTER_WEIGHTS.items():
        w[VOCAB.index(ch)] = value
    return w * AUTHORS_WEIGHT_SCALE


def split_role(n: int, width: int, test_fraction: float, split: str) -> tuple[slice, slice] | None:
    """Train and test windows of a role with ``n`` windows of ``width`` characters (LEAF: window j is
    ``text[j:j+width]``, its label ``text[j+width]``; the role's text has ``n + width`` characters).

    ``split = "text"`` (the authors): the text is cut once, the last ``int(test_fraction * length)``
    characters (at least one) being test text; a window belongs to a side only when it and every label
    it is scored on lie there, so the ``width`` windows across the cut are used by neither, and a role
    with no window on one side is dropped (None). ``"windows"``: the last ``round(test_fraction * n)``
    windows (at least one) are test windows, and every role with two windows is kept."""
    if split == "windows":
        n_test = max(1, int(round(n * test_fraction)))
        return (slice(0, n - n_test), slice(n - n_test, n)) if n >= 2 else None
    length = n + width
    cut = length - max(1, int(test_fraction * length))  # the first test character
    train, test = slice(0, max(0, cut - width)), slice(cut, n)
    return (train, test) if train.stop > 0 and test.stop > test.start else None


#: where LEAF's preprocessing leaves one text file per role, relative to the data root
ROLE_FOLDERS = ("shakespeare/raw_data/by_play_and_character", "shakespeare/data/raw_data/by_play_and_character")


def find_role_files(data_root: Path | None) -> list[Path]:
    """LEAF's per-role text files (``by_play_and_character/*.txt``), or [] when there are none."""
    root = resolve_data_root(data_root)
    return next((sorted(f.glob("*.txt")) for f in (root / d for d in ROLE_FOLDERS) if f.is_dir() and any(f.glob("*.txt"))), [])


def authors_role_split(raw_text: str, test_fraction: float = 0.2) -> tuple[str, str]:
    """A role file's train and test text, as the authors' ``data/shakespeare/generate_data.py`` cuts it:
    runs of two or more spaces become one; the lines are the text split at newlines without its last piece
    (so a last line with no newline after it is dropped); the last ``max(1, int((1 - tr_frac) * n_lines))``
    lines are test, where ``tr_frac = 1 - test_fraction``. That keeps their quirk: ``1 - 0.8`` is
    0.19999999999999996, so a role of 10 lines has 1 test line, not 2. Each side's lines joined by spaces."""
    lines = re.sub(r"   *", " ", raw_text).split("\n")[:-1]
    tr_frac = 1 - test_fraction
    n_test = max(1, int((1 - tr_frac) * len(lines)))
    n_train = len(lines) - n_test
    return " ".join(lines[:n_train]), " ".join(lines[n_train:])


def _windows(text: str, width: int, targets: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``width``-character window of ``text`` (the authors' ``CharacterDataset``: ``len - width`` of them)
    and its labels: the window shifted by one (``"window"``) or the next character (``"next"``)."""
    ids = encode(text)
    view = np.lib.stride_tricks.sliding_window_view(ids, width + 1)
    x = torch.from_numpy(view[:, :width].copy())  # copies: the view's rows overlap in memory
    y = torch.from_numpy(view[:, 1:].copy()) if targets == "window" else torch.from_numpy(view[:, width].copy()).long()
    return x, y


def load_shakespeare_text(
    files: list[Path], fraction: float, test_fraction: float, seed: int, targets: str, width: int = 80,
) -> tuple[list, list]:
    """Per-role (train, test) windows from LEAF's role files by the authors' rule (:func:`authors_role_split`);
    a role is kept when both sides are longer than ``width`` characters (their loader skips a client with an
    empty train or test set). ``int(fraction * roles)`` roles are drawn, as their ``s_frac``."""
    roles = {f.stem: f for f in files}
    train, test = [], []
    for role in _keep_users(roles, fraction, np.random.default_rng(seed), rounding=int):
        train_text, test_text = authors_role_split(roles[role].read_text(), test_fraction)
        if len(train_text) > width and len(test_text) > width:
            train.append(_windows(train_text, width, targets))
            test.append(_windows(test_text, width, targets))
    return train, test


def load_shakespeare(
    data_root: Path | None, fraction: float = 1.0, test_fraction: float = 0.2, min_samples: int = 2, seed: int = 0,
    split: str = "text", targets: str = "window", class_weights: str = "authors", source: str = "auto",
) -> FederatedData:
    weights = authors_class_weights() if class_weights == "authors" else None
    role_files = find_role_files(data_root) if source in ("auto", "text") else []
    if source == "text" and not role_files:
        raise DataError(
            f"shakespeare: source=text needs LEAF's role files in {' or '.join(ROLE_FOLDERS)} under the data root "
            "(LEAF's preprocess_shakespeare.py writes them); or use source=json"
        )
    if role_files:
        _check_fractions("shakespeare", fraction, test_fraction)
        train, test = load_shakespeare_text(role_files, fraction, test_fraction, seed, targets)
        if not train:
            raise DataError("shakespeare: no role has more than 80 characters on both sides of its 80/20 line cut")
        return FederatedData.from_clients(train, test, task="multiclass", num_classes=len(VOCAB), class_weights=weights)
    warnings.warn(
        "shakespeare: reading LEAF's json (no by_play_and_character/*.txt under the data root): its text has no "
        "line breaks, so each role is cut 80/20 by characters, not by lines as the FedEM authors' generate_data.py "
        "does, and the roles kept differ (838 against their 778 on the real data)", stacklevel=2,
    )
    files = find_leaf_files("shakespeare", data_root)
    _check_fractions("shakespeare", fraction, test_fraction)
    users = read_leaf(files)
    rng = np.random.default_rng(seed)
    train, test = [], []
    width = None
    for user in _keep_users(users, fraction, rng):
        x = [w for chunk in users[user][0] for w in chunk]
        y = [c for chunk in users[user][1] for c in chunk]
        if len(y) < max(2, min_samples):
            continue
        if any(not isinstance(w, str) or not isinstance(c, str) or len(c) != 1 for w, c in zip(x, y)):
            raise DataError(f"shakespeare: role {user!r} has samples that are not (window string, next character); re-run LEAF")
        lengths = {len(w) for w in x}
        if width is None:
            width = lengths.pop() if len(lengths) == 1 else -1
        if lengths - {width} or width <= 0:
            raise DataError(f"shakespeare: windows of different lengths ({sorted(lengths | {width})}); LEAF writes 80-character windows")
        sides = split_role(len(y), width, test_fraction, split)
        if sides is None:
            continue
        xs = torch.from_numpy(encode("".join(x)).reshape(len(x), width))  # uint8 ids: a byte per character
        ys = torch.from_numpy(encode("".join(y)))
        if targets == "window":  # the character after every position: the window shifted by one, then its label
            ys = torch.cat([xs[:, 1:], ys.unsqueeze(1)], dim=1)
        else:
            ys = ys.long()
        train.append((xs[sides[0]], ys[sides[0]]))
        test.append((xs[sides[1]], ys[sides[1]]))
    if not train:
        raise DataError(
            f"shakespeare: no role kept (at least {max(2, min_samples)} windows, and with split={split!r} some on both "
            "sides of the train/test cut); lower min_samples, raise fraction or use split=windows"
        )
    return FederatedData.from_clients(train, test, task="multiclass", num_classes=len(VOCAB), class_weights=weights)


def FRACTION(default: float) -> Param:
    return Param(default, low=0.0, high=1.0, low_open=True)


TEST_FRACTION = Param(0.2, low=0.0, high=1.0, low_open=True, high_open=True)


@hookimpl
def fedbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="femnist",
            doc="FEMNIST (LEAF json) by writer, 15 % of writers, 80/20 per writer",
            params={"fraction": FRACTION(0.15), "test_fraction": TEST_FRACTION, "seed": 0, "normalize": True},
            load=lambda data_root=None, **p: load_femnist(data_root, **p),
            shape=lambda **p: DataShape((1, 28, 28), 62),
            default_model="femnist_cnn",
            check=lambda data_root=None: check("femnist", data_root),
        ),
        DatasetSpec(
            name="shakespeare",
            doc="Shakespeare (LEAF json) by speaking role, the character after every position of an 80-char window, "
                "the authors' class weights, first 80 % of each role's text train",
            params={
                "fraction": FRACTION(1.0), "test_fraction": TEST_FRACTION, "min_samples": Param(2, low=1), "seed": 0,
                "split": Param("text", choices=("text", "windows")), "targets": Param("window", choices=("window", "next")),
                "class_weights": Param("authors", choices=("authors", "none")),
                "source": Param("auto", choices=("auto", "text", "json"),
                                doc="LEAF's role .txt files by the authors' line cut (auto: when present), or its json"),
            },
            load=lambda data_root=None, **p: load_shakespeare(data_root, **p),
            # 80-character windows of byte ids; labels: the window shifted by one, or the next character
            shape=lambda **p: DataShape((80,), len(VOCAB), label_shape=(80,) if p["targets"] == "window" else (),
                                        input_dtype=torch.uint8),
            default_model="next_char_lstm",
            check=lambda data_root=None: check("shakespeare", data_root),
        ),
    ]
