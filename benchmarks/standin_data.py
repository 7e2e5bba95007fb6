"""Format-exact STAND-INS for the FedEM paper's data sets, at their real sizes (no real images or text).

    python benchmarks/standin_data.py --root /tmp/standin [--only cifar10,emnist] [--scale 1.0]
    python benchmarks/standin_data.py --root /tmp/standin-short --only shakespeare --short-roles

Writes, under ``ROOT``, the files fedbench's loaders read, in the very formats
torchvision and LEAF write, with the real data sets' sample counts, label
counts and client structure, but with class-dependent noise instead of images
and text (so a model can learn something, and nothing real is redistributed):

- ``cifar-10-batches-py/``: five ``data_batch_i`` and ``test_batch`` python-2
  pickles (protocol 2, every byte string a Python 2 ``str``: ``encoding="bytes"`` reads bytes keys,
  torchvision's ``encoding="latin1"`` str keys, as with the real files), 50,000 + 10,000 images of
  3 x 32 x 32 uint8;
- ``cifar-100-python/``: ``train`` and ``test`` with fine and coarse labels
  (100 fine labels in 20 coarse groups of 5); both with the label-name file
  (``batches.meta``, ``meta``) torchvision's loader also reads;
- ``EMNIST/raw/``: EMNIST ByClass IDX files, 697,932 + 116,323 images of 28 x 28,
  62 classes;
- ``femnist/data/all_data/``: LEAF json, 3,597 writers, 817,851 samples of 784
  floats in [0, 1], 62 classes, spread over 36 files as LEAF does;
- ``shakespeare/data/all_data/``: LEAF json, 1,129 speaking roles, 4,226,158
  samples (80-character windows and the next character); ``shakespeare/raw_data/by_play_and_character/``:
  the same roles' text, one file per role, as LEAF's ``preprocess_shakespeare.py`` writes it.

Every folder gets a ``STANDIN.txt`` saying what it is. ``--scale`` shrinks every
count (for quick checks); the paper-scale numbers need ``--scale 1``.

``--short-roles`` (Shakespeare only) keeps the real number of roles and the paper's number of clients but not
the text volume: 1,129 roles, of which 778 speak three lines of 100 characters (201 train and 100 test
characters after the FedEM authors' line cut, so both codes' 80-character rule keeps them) and 351 speak one
line (no train text: dropped by both). A round then trains the paper's 778 clients, whose per-client state
(models, optimiser state) is what grows with the clients, in tens of minutes instead of hours on a CPU; each
client has 95-121 train windows (runs of spaces collapse in the cut), one batch (the protocol's batch is 128).
"""

from __future__ import annotations

import argparse
import json
import pickle
import string
import struct
import time
from pathlib import Path

import numpy as np

NOTE = "STAND-IN written by fedbench benchmarks/standin_data.py: class-dependent noise, not the real data set.\n"


def _mark(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "STANDIN.txt").write_text(NOTE)


def _images(rng: np.random.Generator, labels: np.ndarray, prototypes: np.ndarray, noise: float) -> np.ndarray:
    """uint8 images: each label's prototype plus Gaussian noise, clipped."""
    out = np.empty((len(labels), prototypes.shape[1]), dtype=np.uint8)
    for start in range(0, len(labels), 20_000):  # in chunks: 800k x 784 floats at once would be 5 GB
        lab = labels[start : start + 20_000]
        x = prototypes[lab] + rng.normal(0.0, noise, size=(len(lab), prototypes.shape[1]))
        out[start : start + len(lab)] = np.clip(x, 0, 255).astype(np.uint8)
    return out


def cifar(root: Path, name: str, scale: float, rng: np.random.Generator) -> None:
    n_classes = 10 if name == "cifar10" else 100
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    _mark(folder)
    protos = rng.uniform(0, 255, size=(n_classes, 3072))
    if name == "cifar10":
        files = [(f"data_batch_{i}", int(10_000 * scale)) for i in range(1, 6)] + [("test_batch", int(10_000 * scale))]
    else:
        files = [("train", int(50_000 * scale)), ("test", int(10_000 * scale))]
    for fname, n in files:
        labels = np.arange(n) % n_classes  # the real files are balanced
        labels = rng.permutation(labels)
        batch = {b"batch_label": fname.encode(), b"data": _images(rng, labels, protos, 60.0),
                 b"filenames": [f"standin_{i}.png".encode() for i in range(n)]}
        if name == "cifar10":
            batch[b"labels"] = labels.tolist()
        else:
            batch[b"fine_labels"] = labels.tolist()
            batch[b"coarse_labels"] = (labels // 5).tolist()
        with open(folder / fname, "wb") as fh:
            Py2Pickler(fh, protocol=2).dump(batch)
    # the label-name file torchvision's loader reads too (stand-in names)
    if name == "cifar10":
        meta_name, meta = "batches.meta", {b"label_names": [f"class_{i}".encode() for i in range(10)],
                                           b"num_cases_per_batch": 10_000, b"num_vis": 3072}
    else:
        meta_name, meta = "meta", {b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
                                   b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]}
    with open(folder / meta_name, "wb") as fh:
        Py2Pickler(fh, protocol=2).dump(meta)


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it (the real CIFAR batches): a byte string is a Python 2 ``str``
    (``SHORT_BINSTRING``/``BINSTRING``), which ``pickle.load`` turns into bytes with ``encoding="bytes"``
    and into str with ``encoding="latin1"``. Python 3's own protocol 2 writes bytes as a call to
    ``codecs.encode``, bytes under every encoding, which torchvision's loader cannot read."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(np.ascontiguousarray(array).tobytes())


def emnist(root: Path, scale: float, rng: np.random.Generator) -> None:
    folder = root / "EMNIST" / "raw"
    _mark(folder)
    protos = rng.uniform(0, 255, size=(62, 784)) * (rng.random((62, 784)) < 0.2)  # sparse strokes on black
    freq = np.r_[np.full(10, 10.0), np.full(52, 1.0)]  # ByClass: digits far more frequent than letters
    for split, n in (("train", int(697_932 * scale)), ("test", int(116_323 * scale))):
        labels = rng.choice(62, size=n, p=freq / freq.sum()).astype(np.uint8)
        images = _images(rng, labels, protos, 40.0).reshape(n, 28, 28)
        _idx(folder / f"emnist-byclass-{split}-images-idx3-ubyte", images)
        _idx(folder / f"emnist-byclass-{split}-labels-idx1-ubyte", labels)


def femnist(root: Path, scale: float, rng: np.random.Generator, n_files: int = 36) -> None:
    folder = root / "femnist" / "data" / "all_data"
    _mark(folder)
    writers = max(2, int(3_597 * scale))
    total = int(817_851 * scale)
    counts = np.maximum(2, rng.normal(total / writers, 0.35 * total / writers, size=writers).astype(int))
    protos = 255.0 - rng.uniform(0, 255, size=(62, 784)) * (rng.random((62, 784)) < 0.2)  # dark strokes on white
    levels = [f"{v / 15:.4g}" for v in range(16)]  # LEAF stores grey levels as floats in [0, 1]
    table = np.array(levels, dtype=object)
    for k, chunk in enumerate(np.array_split(np.arange(writers), n_files)):
        parts = []
        users, nums = [], []
        for w in chunk:
            user = f"f{w:04d}_{int(rng.integers(10, 99))}"
            labels = rng.integers(0, 62, size=counts[w])
            x = (_images(rng, labels, protos, 50.0) // 17).astype(np.int64)  # 16 grey levels
            rows = ",".join("[" + ",".join(table[row]) + "]" for row in x)
            parts.append(f'{json.dumps(user)}: {{"x": [{rows}], "y": {json.dumps(labels.tolist())}}}')
            users.append(user)
            nums.append(int(counts[w]))
        text = (f'{{"users": {json.dumps(users)}, "num_samples": {json.dumps(nums)}, "user_data": {{'
                + ", ".join(parts) + "}}")
        (folder / f"all_data_{k}.json").write_text(text)


def _role_files(root: Path, texts: list[str], n_files: int = 4, note: str = "") -> None:
    """Each role's text (role r: ``texts[r]``) as LEAF's json (every 80-character window and the character
    after it, spread over ``n_files`` files) and as LEAF's per-role text file, the same text."""
    folder = root / "shakespeare" / "data" / "all_data"
    _mark(folder)
    if note:
        (folder / "STANDIN.txt").write_text(NOTE + note)
    # LEAF's preprocess_shakespeare.py writes one text file per role (its speech lines, one a line) before its
    # json: the FedEM authors' generate_data.py reads those, and so does fedbench when they are present
    roles_folder = root / "shakespeare" / "raw_data" / "by_play_and_character"
    _mark(roles_folder.parent)  # (not in the role folder: every .txt there is a role)
    roles_folder.mkdir(exist_ok=True)
    for k, chunk in enumerate(np.array_split(np.arange(len(texts)), n_files)):
        doc: dict = {"users": [], "hierarchies": [], "num_samples": [], "user_data": {}}
        for r in chunk:
            user, text = f"STANDIN_PLAY_{r // 20}_ROLE{r}", texts[r]
            n = len(text) - 80
            doc["users"].append(user)
            doc["hierarchies"].append(f"STANDIN_PLAY_{r // 20}")
            doc["num_samples"].append(n)
            doc["user_data"][user] = {"x": [text[i : i + 80] for i in range(n)], "y": [text[i + 80] for i in range(n)]}
            (roles_folder / f"{user}.txt").write_text(text)  # the same text, its line breaks the lines
        (folder / f"all_data_{k}.json").write_text(json.dumps(doc))


def shakespeare(root: Path, scale: float, rng: np.random.Generator) -> None:
    roles = max(2, int(1_129 * scale))
    total = int(4_226_158 * scale)
    weights = rng.lognormal(0.0, 1.5, size=roles)
    counts = np.maximum(1, (weights / weights.sum() * total).astype(int))
    alphabet = np.array(list(string.ascii_letters + " ,.;:!?'\n"))
    texts = []
    for r in range(roles):
        p = rng.dirichlet(np.full(len(alphabet), 0.5))  # each role its own character distribution
        texts.append("".join(rng.choice(alphabet, size=int(counts[r]) + 80, p=p)))
    _role_files(root, texts)


SHORT_KEPT, SHORT_LINE = 778, 100


def shakespeare_short(root: Path, rng: np.random.Generator, roles: int = 1_129) -> None:
    """The real role count, short texts: :data:`SHORT_KEPT` roles of three ``SHORT_LINE``-character lines, the
    rest of one line (see the module's docstring)."""
    alphabet = np.array(list(string.ascii_letters + " ,.;:!?'"))
    texts = []
    for r in range(roles):
        p = rng.dirichlet(np.full(len(alphabet), 0.5))
        lines = 3 if r < SHORT_KEPT else 1
        texts.append("".join("".join(rng.choice(alphabet, size=SHORT_LINE, p=p)) + "\n" for _ in range(lines)))
    _role_files(root, texts, note=f"--short-roles: {roles} roles, {SHORT_KEPT} of three {SHORT_LINE}-character "
                                  "lines, the rest of one line.\n")


WRITERS = {
    "cifar10": lambda root, s, rng: cifar(root, "cifar10", s, rng),
    "cifar100": lambda root, s, rng: cifar(root, "cifar100", s, rng),
    "emnist": emnist,
    "femnist": femnist,
    "shakespeare": shakespeare,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="data root to write into (pass it as --data-root)")
    p.add_argument("--only", help="comma-separated subset of " + ", ".join(WRITERS))
    p.add_argument("--scale", type=float, default=1.0, help="multiply every count (1 = the real sizes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--short-roles", action="store_true",
                   help="Shakespeare only: the real role count and the paper's 778 clients, each with a short text")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(WRITERS)
    if args.short_roles:
        if names != ["shakespeare"] or args.scale != 1.0:
            p.error("--short-roles writes Shakespeare at its real role count: use it with --only shakespeare and no --scale")
        shakespeare_short(args.root, np.random.default_rng([args.seed, list(WRITERS).index("shakespeare")]))
        print(f"shakespeare (--short-roles) written under {args.root}", flush=True)
        return
    for name in names:
        start = time.time()
        WRITERS[name](args.root, args.scale, np.random.default_rng([args.seed, list(WRITERS).index(name)]))
        size = sum(f.stat().st_size for f in args.root.rglob("*") if f.is_file())
        print(f"{name}: written in {time.time() - start:.0f}s ({args.root} now holds {size / 1e6:.0f} MB)", flush=True)


if __name__ == "__main__":
    main()
