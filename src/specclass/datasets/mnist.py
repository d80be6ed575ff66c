"""MNIST for the Keras learning track: loading (online or offline) and normalisation.

``load_mnist`` follows ``keras.datasets.mnist.load_data`` and returns the same
``(x_train, y_train), (x_test, y_test)`` tuple of uint8 arrays. Three ways in:

1. ``load_mnist()`` with no file in the cache: Keras's own code downloads
   ``mnist.npz`` (``keras.utils.get_file`` with Keras's origin URL and sha256,
   into ``<cache_dir>/datasets/``; ``cache_dir`` defaults to ``$KERAS_HOME`` or
   ``~/.keras``, as in Keras).
2. ``load_mnist()`` when ``<cache_dir>/datasets/mnist.npz`` exists: read offline,
   with no network access even when its hash is not Keras's (Keras itself would
   try to download again), after checking keys, shapes and dtypes.
3. ``load_mnist(path="mnist.npz")``: read that local file the same way. The
   project's shared copy (``../shared/data/mnist/mnist.npz``) holds the same arrays
   as Keras's file but was re-compressed, so its sha256 differs (see its
   PROVENANCE.md); it is read with ``numpy.load`` by key.

Reference: Y. LeCun, C. Cortes, C. J. C. Burges, "The MNIST database of
handwritten digits"; data under CC BY-SA 3.0 (see Keras's ``mnist.load_data``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

#: Where ``keras.datasets.mnist.load_data`` downloads from (Keras 3 source).
KERAS_MNIST_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
#: sha256 of Keras's ``mnist.npz`` (Keras 3 source, ``keras/src/datasets/mnist.py``).
KERAS_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
#: The four arrays of an ``mnist.npz`` with their shapes' trailing dims and dtype.
EXPECTED_ARRAYS = {
    "x_train": ((28, 28), np.uint8),
    "y_train": ((), np.uint8),
    "x_test": ((28, 28), np.uint8),
    "y_test": ((), np.uint8),
}
CLASS_NAMES = [str(d) for d in range(10)]

MnistArrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class MnistFormatError(ValueError):
    """An ``mnist.npz`` file lacks a key or has a wrong shape/dtype (message names file and key)."""


def read_mnist_npz(path: str | os.PathLike) -> MnistArrays:
    """Read a Keras-layout ``mnist.npz`` by key, without pickle, and validate it.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: ``x_*`` ``(N, 28, 28)`` uint8 in
        0..255, ``y_*`` ``(N,)`` uint8 in 0..9.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        MnistFormatError: if a key is missing, a shape/dtype is wrong, the image and
            label counts differ, or a label is outside 0..9.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such MNIST file")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in EXPECTED_ARRAYS if k not in z.files]
            if missing:
                raise MnistFormatError(f"{path}: missing array(s) {missing}; found {sorted(z.files)}")
            arrays = {k: z[k] for k in EXPECTED_ARRAYS}
    except (OSError, ValueError) as exc:
        if isinstance(exc, MnistFormatError):
            raise
        raise MnistFormatError(f"{path}: not a readable .npz file ({exc})") from exc
    for key, (tail, dtype) in EXPECTED_ARRAYS.items():
        a = arrays[key]
        if a.ndim != 1 + len(tail) or a.shape[1:] != tail:
            raise MnistFormatError(f"{path}: {key} has shape {a.shape}, expected (N, {', '.join(map(str, tail))})"
                                   if tail else f"{path}: {key} has shape {a.shape}, expected (N,)")
        if a.dtype != dtype:
            raise MnistFormatError(f"{path}: {key} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    for part in ("train", "test"):
        if arrays[f"x_{part}"].shape[0] != arrays[f"y_{part}"].shape[0]:
            raise MnistFormatError(
                f"{path}: x_{part} has {arrays[f'x_{part}'].shape[0]} images but y_{part} "
                f"{arrays[f'y_{part}'].shape[0]} labels"
            )
        if arrays[f"y_{part}"].size and arrays[f"y_{part}"].max() > 9:
            raise MnistFormatError(f"{path}: y_{part} has a label {arrays[f'y_{part}'].max()} outside 0..9")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def default_cache_dir() -> Path:
    """Keras's cache folder: ``$KERAS_HOME``, else ``~/.keras`` (what ``keras.utils.get_file`` uses)."""
    return Path(os.environ.get("KERAS_HOME") or os.path.expanduser(os.path.join("~", ".keras")))


def load_mnist(
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    origin: str = KERAS_MNIST_ORIGIN,
    file_hash: str | None = KERAS_MNIST_SHA256,
) -> MnistArrays:
    """Load MNIST as ``keras.datasets.mnist.load_data`` does, with an offline cache.

    Args:
        path: a local ``mnist.npz`` (Keras layout) to read; no network is used.
        cache_dir: the cache folder (file at ``<cache_dir>/datasets/mnist.npz``);
            default ``$KERAS_HOME`` or ``~/.keras`` as in Keras. A file already
            there is read offline; otherwise ``keras.utils.get_file`` downloads it.
        origin: download URL (Keras's by default; tests point it at a local server).
        file_hash: sha256 the download must have (Keras's by default); ``None``
            skips the check.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: uint8 arrays, images
        ``(N, 28, 28)`` in 0..255, labels ``(N,)`` in 0..9 (60,000 + 10,000 for the
        full set).

    Raises:
        FileNotFoundError: if ``path`` is given and does not exist.
        MnistFormatError: if the file is not a valid Keras-layout ``mnist.npz``.
        Exception: Keras's download error (no network, HTTP error, hash mismatch).
    """
    if path is not None:
        return read_mnist_npz(path)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = cache / "datasets" / "mnist.npz"
    if cached.is_file():
        if file_hash is not None and _sha256(cached) != file_hash:
            log.info("%s: sha256 differs from %s; reading its arrays by key (no download)", cached, file_hash)
        return read_mnist_npz(cached)
    import keras

    log.info("downloading MNIST from %s into %s", origin, cached.parent)
    try:
        fetched = keras.utils.get_file(fname="mnist.npz", origin=origin, file_hash=file_hash, cache_dir=str(cache))
    except BaseException:
        # get_file leaves a downloaded file whose hash did not match; never keep it in
        # the cache, where the next call would read it offline.
        if cached.exists():
            cached.unlink()
        raise
    return read_mnist_npz(fetched)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def normalise(x: np.ndarray, method: Literal["scale", "keras_l2"] = "scale") -> np.ndarray:
    """Turn uint8 images into float32 network input.

    Methods:
        ``"scale"`` (default): ``x / 255``, so every pixel is in [0, 1]; checked
            after scaling (raises if the input was not in 0..255).
        ``"keras_l2"``: the tutorial's ``keras.utils.normalize(x, axis=1)``. This is
            NOT a 0–1 scaling: it divides each vector along axis 1 by its L2 norm
            (``x / ||x||_2``, zero vectors left at 0). For ``(N, 28, 28)`` images,
            axis 1 is the image rows' axis, so each *column* of each image (28
            pixels down the rows) gets unit L2 norm; values are in [0, 1] but a
            column's maximum is usually far below 1, and the pixel scale differs
            from column to column. Kept for comparison with the tutorial.

    Args:
        x: ``(N, 28, 28)`` (or any ``(N, ...)``) pixel array, 0..255.
        method: ``"scale"`` or ``"keras_l2"``.

    Returns:
        float32 array of the same shape.

    Raises:
        ValueError: for an unknown method, or pixel values outside [0, 255].
    """
    x = np.asarray(x)
    if method not in ("scale", "keras_l2"):
        raise ValueError(f"normalise: method must be 'scale' or 'keras_l2', got {method!r}")
    if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 255):
        raise ValueError(f"normalise: pixels must be in [0, 255], got range [{np.nanmin(x)}, {np.nanmax(x)}]")
    if method == "scale":
        out = x.astype(np.float32) / np.float32(255.0)
        if out.size and not (out.min() >= 0.0 and out.max() <= 1.0):  # pragma: no cover - guarded above
            raise ValueError("normalise: scaled pixels left [0, 1]")
        return out
    import keras

    return np.asarray(keras.utils.normalize(x.astype(np.float32), axis=1, order=2), dtype=np.float32)


def augment_images(
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    max_shift: float = 2.0,
    max_rotation: float = 10.0,
) -> np.ndarray:
    """Randomly shift and rotate images (training-time augmentation).

    Each image gets its own rotation angle, drawn uniformly in
    ``[-max_rotation, max_rotation]`` degrees about the image centre, and its own
    shift, drawn uniformly in ``[-max_shift, max_shift]`` pixels along each axis;
    both are applied as one affine map with bilinear interpolation
    (``scipy.ndimage.affine_transform``, ``order=1``), pixels entering from
    outside the image are 0 (background). Shifts of a few pixels and rotations of
    about 10 degrees are the classic MNIST distortions that keep every digit
    recognisable (Simard, Steinkraus & Platt 2003, "Best practices for
    convolutional neural networks applied to visual document analysis", ICDAR).

    Args:
        x: ``(N, H, W)`` float32 images (already normalised, background 0).
        rng: the random generator (seeded by the caller for reproducibility).
        max_shift: largest shift in pixels (>= 0).
        max_rotation: largest rotation in degrees (>= 0).

    Returns:
        ``(N, H, W)`` float32 array, a new array (``x`` is not modified); ``x``
        itself (copied) when both limits are 0.

    Raises:
        ValueError: if ``x`` is not ``(N, H, W)`` or a limit is negative.
    """
    from scipy import ndimage

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"augment_images: expected (N, H, W) images, got shape {x.shape}")
    if not (max_shift >= 0 and max_rotation >= 0):
        raise ValueError(f"augment_images: max_shift and max_rotation must be >= 0, got {max_shift}, {max_rotation}")
    if max_shift == 0 and max_rotation == 0:
        return x.copy()
    n, h, w = x.shape
    angles = np.deg2rad(rng.uniform(-max_rotation, max_rotation, n))
    shifts = rng.uniform(-max_shift, max_shift, (n, 2))
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    out = np.empty_like(x)
    for i in range(n):
        c, s = np.cos(angles[i]), np.sin(angles[i])
        # affine_transform maps output coordinates o to input coordinates M @ o + offset:
        # rotate about the centre, then move the content by +shift.
        m = np.array([[c, -s], [s, c]])
        offset = centre - m @ (centre + shifts[i])
        out[i] = ndimage.affine_transform(x[i], m, offset=offset, order=1, mode="constant", cval=0.0)
    return out


def augmented_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    max_shift: float = 2.0,
    max_rotation: float = 10.0,
    seed: int = 0,
):
    """A ``keras.utils.PyDataset`` of freshly augmented, reshuffled training batches.

    Every epoch the images are reshuffled and every batch is passed through
    :func:`augment_images`, so the network never sees the same distorted image
    twice. Augmentation happens in the input pipeline (NumPy/SciPy), so the model
    itself is unchanged and backend-neutral, and validation/test images are never
    augmented.

    Args:
        x: ``(N, H, W)`` float32 training images.
        y: ``(N,)`` int labels.
        batch_size: images per batch (the last batch may be smaller).
        max_shift, max_rotation: see :func:`augment_images`.
        seed: seeds the shuffling and the distortions.

    Returns:
        A ``keras.utils.PyDataset`` yielding ``(x_batch, y_batch)``; pass it to
        ``model.fit`` (``shuffle`` is ignored there: it shuffles itself).
    """
    import keras

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"augmented_batches: need as many labels as images (> 0), got {len(x)} and {len(y)}")

    class _AugmentedBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self) -> int:
            return math.ceil(len(x) / batch_size)

        def __getitem__(self, index: int):
            idx = self.order[index * batch_size:(index + 1) * batch_size]
            return augment_images(x[idx], self.rng, max_shift=max_shift, max_rotation=max_rotation), y[idx]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(x))

    return _AugmentedBatches()
