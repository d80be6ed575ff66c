"""Data feeding for :func:`specclass.training.train`: training/validation rows, class
weights, and the batches given to ``model.fit``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from specclass.spectra.dataset import SpectralDataset


def _split_rows(dataset: "SpectralDataset") -> tuple[np.ndarray, np.ndarray]:
    from specclass.spectra.dataset import SPLIT_CODES

    split = np.asarray(dataset.meta["split"])
    labelled = dataset.labels >= 0
    train_idx = np.flatnonzero(labelled & (split == SPLIT_CODES["train"]))
    val_idx = np.flatnonzero(labelled & (split == SPLIT_CODES["val"]))
    if train_idx.size == 0:
        raise ValueError(
            "dataset has no labelled training rows (meta['split'] == 0); build it with "
            "`specclass build-dataset`, which assigns grouped train/val/test splits"
        )
    if val_idx.size == 0:
        raise ValueError(
            "dataset has no labelled validation rows (meta['split'] == 1); specclass validates on the "
            "dataset's grouped split, never on Keras' validation_split (the unshuffled tail)"
        )
    return train_idx, val_idx



def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """``"balanced"`` class weights ``n / (k * count_c)`` for the classes present in ``labels``.

    Uses :func:`sklearn.utils.class_weight.compute_class_weight`; classes absent
    from ``labels`` get weight 1.0 (they cannot contribute to the loss anyway).

    Args:
        labels: ``(N,)`` int class indices in ``[0, n_classes)``.
        n_classes: total number of classes.
    """
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = {c: 1.0 for c in range(n_classes)}
    out.update({int(c): float(w) for c, w in zip(present, weights)})
    return out



def _training_batch(seq: Any, flux: np.ndarray, ivar: np.ndarray, index: int, rows: np.ndarray) -> tuple:
    """``(x, y, sample_weight)`` of one training batch: augmented (seeded by seed, epoch and batch
    index, so in-memory and streamed feeding give the same batches) and preprocessed."""
    if seq.augmentation is not None and seq.augmentation.enabled:
        rng = np.random.default_rng([seq.seed, seq.epoch, index])
        flux, ivar = seq.augmentation.apply(flux, ivar, rng)
    return seq.preprocessor.transform(flux, ivar), seq.y[rows], seq.w[rows]


def _spectra_sequence_class() -> type:
    import keras

    class SpectraSequence(keras.utils.PyDataset):
        """Batches ``(x, y, sample_weight)`` preprocessed on the fly, optionally augmented.

        Shuffling and augmentation draw from ``numpy.random.default_rng([seed, epoch, batch])``,
        so a resumed run sees the same batches as an uninterrupted one.
        """

        def __init__(self, flux, ivar, y, w, preprocessor, batch_size, augmentation, seed, initial_epoch=0):
            super().__init__(workers=1, use_multiprocessing=False)
            self.flux, self.ivar, self.y, self.w = flux, ivar, y, w
            self.preprocessor, self.batch_size = preprocessor, int(batch_size)
            self.augmentation, self.seed = augmentation, int(seed)
            self.epoch = int(initial_epoch)
            self._order = self._shuffle()

        def _shuffle(self) -> np.ndarray:
            return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.y))

        def __len__(self) -> int:
            return math.ceil(len(self.y) / self.batch_size)

        def __getitem__(self, index: int):
            rows = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
            return _training_batch(self, self.flux[rows], self.ivar[rows], index, rows)

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._order = self._shuffle()

    return SpectraSequence


# --------------------------------------------------------------------------- streaming from the file
#: ``stream=None`` (auto) trains from the file when its flux + ivar would take more
#: than this in memory as float32 (2 GiB: about 70,000 spectra on the default grid).
STREAM_AUTO_BYTES = 2 * 1024**3
#: Training rows shuffled together when streaming (whole HDF5 chunks, about 250 MB
#: of float32 flux + ivar on the default grid of 3,801 pixels).
DEFAULT_SHUFFLE_BUFFER = 8192


def use_streaming(dataset: Any, stream: bool | None, n_proc: int = 1) -> bool:
    """Whether :func:`~specclass.training.train` reads batches from the file.

    Args:
        dataset: what ``train`` was given (a dataset object or a file path).
        stream: ``True`` (always, for an ``.h5`` file), ``False`` (load into
            memory), ``None`` (auto: when flux + ivar exceed :data:`STREAM_AUTO_BYTES`).
        n_proc: training processes (streaming is single-process only).

    Raises:
        ValueError: ``stream=True`` with an in-memory dataset, an ``.npz`` file, or
            several processes.
    """
    from specclass.spectra.dataset import SpectralDataset
    from specclass.spectra.ondisk import array_bytes

    in_file = not isinstance(dataset, SpectralDataset) and Path(dataset).suffix != ".npz"
    if stream is None:
        return in_file and n_proc == 1 and array_bytes(dataset) > STREAM_AUTO_BYTES
    if stream and not in_file:
        raise ValueError("stream=True needs the path of an HDF5 dataset file (.h5), not an in-memory "
                         "dataset or an .npz archive")
    if stream and n_proc > 1:
        raise ValueError(f"stream=True trains in one process; this run has {n_proc} (use stream=False)")
    return bool(stream)


def stream_order(file_rows: np.ndarray, chunk_rows: int, seed: int, epoch: int,
                 buffer_rows: int = DEFAULT_SHUFFLE_BUFFER) -> tuple[np.ndarray, np.ndarray]:
    """The order in which one epoch visits the training rows when streaming.

    Shuffled in two levels, all from ``numpy.random.default_rng([seed, epoch])``:
    the HDF5 chunks holding training rows are put in random order, taken in groups
    of ``buffer_rows // chunk_rows`` chunks (a *buffer*), and the rows of each buffer
    are permuted. When all training rows fit in one buffer the order is exactly
    ``default_rng([seed, epoch]).permutation(n)``, the order of the in-memory
    augmentation path (:func:`_spectra_sequence_class`), so a small file streams
    the same batches.

    Args:
        file_rows: ``(n,)`` increasing file row numbers of the training rows.
        chunk_rows: rows per HDF5 chunk of the file.
        seed, epoch: the run's seed and the 0-based epoch.
        buffer_rows: rows shuffled together (>= 1).

    Returns:
        ``(order, buffer_of)``: ``(n,)`` int64 positions into ``file_rows`` in visiting
        order, and ``(n,)`` int32 buffer number of each position.
    """
    file_rows = np.asarray(file_rows, dtype=np.int64)
    n = file_rows.size
    rng = np.random.default_rng([int(seed), int(epoch)])
    if n <= buffer_rows:
        return rng.permutation(n), np.zeros(n, dtype=np.int32)
    starts = np.flatnonzero(np.r_[True, np.diff(file_rows // chunk_rows) != 0])
    bounds = np.r_[starts, n]
    per_buffer = max(1, buffer_rows // chunk_rows)
    chunk_order = rng.permutation(starts.size)
    order, buffer_of = [], np.empty(n, dtype=np.int32)
    for b, first in enumerate(range(0, chunk_order.size, per_buffer)):
        pos = np.concatenate([np.arange(bounds[c], bounds[c + 1]) for c in chunk_order[first : first + per_buffer]])
        buffer_of[pos] = b
        order.append(pos[rng.permutation(pos.size)])
    return np.concatenate(order), buffer_of


def _streaming_sequence_class() -> type:
    import keras

    class StreamingSequence(keras.utils.PyDataset):
        """Training batches ``(x, y, sample_weight)`` read from the dataset file.

        Visits rows in :func:`stream_order`; holds at most three buffers of flux/ivar
        (the one being served, the previous one when a batch straddles them, and the
        next one, read ahead by a background thread while the network trains on this
        one), so memory is bounded by ``buffer_rows``, not by the number of rows. Rows
        inside a batch are sorted and augmentation draws from
        ``default_rng([seed, epoch, batch])``, as in the in-memory ``SpectraSequence``;
        the read-ahead changes when a buffer is read, never what it holds.
        """

        def __init__(self, data, y, w, preprocessor, batch_size, augmentation, seed, initial_epoch=0,
                     buffer_rows=DEFAULT_SHUFFLE_BUFFER):
            super().__init__(workers=1, use_multiprocessing=False)
            self.data, self.y, self.w = data, y, w
            self.preprocessor, self.batch_size = preprocessor, int(batch_size)
            self.augmentation, self.seed = augmentation, int(seed)
            self.buffer_rows = int(buffer_rows)
            self.epoch = int(initial_epoch)
            self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
            self._ahead: tuple[int, Any] | None = None  # (buffer, Future) being read in the background
            self._reader: Any = None  # ThreadPoolExecutor, made on first use (not picklable)
            self._shuffle()

        def _shuffle(self) -> None:
            self._drop_ahead()
            self._order, self._buffer_of = stream_order(self.data.rows, self.data.chunk_rows, self.seed,
                                                        self.epoch, self.buffer_rows)
            self._n_buffers = int(self._buffer_of.max()) + 1 if self._buffer_of.size else 0
            if self._order.size > self.buffer_rows or len(self._cache) != 1:
                self._cache = {}  # one buffer holding every row is kept across epochs

        def _read_buffer(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            pos = np.sort(np.flatnonzero(self._buffer_of == b))
            return (pos, *self.data.read(pos))

        def _drop_ahead(self) -> None:
            if self._ahead is not None:
                self._ahead[1].result()  # let a running read finish before the order changes
                self._ahead = None

        def _read_ahead(self, b: int) -> None:
            """Start reading buffer ``b`` in the background (the HDF5 read and the float16 ->
            float32 conversion overlap with training on the current buffer)."""
            if b >= self._n_buffers or b in self._cache or self._ahead is not None:
                return
            if self._reader is None:
                from concurrent.futures import ThreadPoolExecutor

                self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specclass-read-ahead")
            self._ahead = (b, self._reader.submit(self._read_buffer, b))

        @property
        def sequential(self) -> bool:
            """True when the training rows span several buffers: Keras must then ask for
            the batches in order (``model.fit(..., shuffle=False)``), or every batch
            could need another buffer read from the file. With one buffer, Keras may
            shuffle the batch order, as it does for the in-memory sequence."""
            return self._order.size > self.buffer_rows

        def _buffer(self, b: int, keep: set[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            if b not in self._cache:
                for old in [k for k in self._cache if k not in keep][: max(0, len(self._cache) - 1)]:
                    del self._cache[old]  # at most two buffers served, whatever the access order
                if self._ahead is not None and self._ahead[0] == b:
                    self._cache[b] = self._ahead[1].result()
                    self._ahead = None
                else:
                    self._cache[b] = self._read_buffer(b)
                if self.sequential:
                    self._read_ahead(b + 1)
            return self._cache[b]

        def __len__(self) -> int:
            return math.ceil(len(self.y) / self.batch_size)

        def __getitem__(self, index: int):
            rows = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
            flux = np.empty((rows.size, self.data.flux.shape[1]), dtype=np.float32)
            ivar = np.empty_like(flux)
            bufs = self._buffer_of[rows]
            needed = {int(b) for b in np.unique(bufs)}
            for b in sorted(needed):
                pos, bflux, bivar = self._buffer(b, needed)
                sel = bufs == b
                at = np.searchsorted(pos, rows[sel])
                flux[sel], ivar[sel] = bflux[at], bivar[at]
            return _training_batch(self, flux, ivar, index, rows)

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._shuffle()

    return StreamingSequence


def _validation_sequence_class() -> type:
    import keras

    class ValidationSequence(keras.utils.PyDataset):
        """Validation batches ``(x, y)`` read from the file in row order (the batches
        of ``validation_data=(x_val, y_val)`` with the same batch size)."""

        def __init__(self, data, y, preprocessor, batch_size):
            super().__init__(workers=1, use_multiprocessing=False)
            self.data, self.y, self.preprocessor, self.batch_size = data, y, preprocessor, int(batch_size)

        def __len__(self) -> int:
            return math.ceil(len(self.y) / self.batch_size)

        def __getitem__(self, index: int):
            rows = np.arange(index * self.batch_size, min(len(self.y), (index + 1) * self.batch_size))
            return self.preprocessor.transform(*self.data.read(rows)), self.y[rows]

    return ValidationSequence
