"""Data feeding for :func:`specclass.training.train`: training/validation rows, class
weights, and the batches given to ``model.fit``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

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
            flux, ivar = self.flux[rows], self.ivar[rows]
            if self.augmentation is not None and self.augmentation.enabled:
                rng = np.random.default_rng([self.seed, self.epoch, index])
                flux, ivar = self.augmentation.apply(flux, ivar, rng)
            return self.preprocessor.transform(flux, ivar), self.y[rows], self.w[rows]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._order = self._shuffle()

    return SpectraSequence
