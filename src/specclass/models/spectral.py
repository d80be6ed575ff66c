"""1-D convolutional networks for gridded spectra (backend-neutral Keras 3).

Both builders take spectra on a common log-lambda grid, preprocessed by
:class:`specclass.preprocessing.Preprocessor`:

Input shape:
    ``(batch_size, input_length, channels)`` float32; channel 0 is the normalised
    flux, channel 1 (``channels=2``) a good-pixel weight in [0, 1].

Output shape:
    ``(batch_size, n_classes)`` softmax class probabilities, in the order of the
    dataset's ``class_names``.

Only stock Keras layers are used (no ``Lambda``, no custom objects), so saved
models load with ``safe_mode=True`` under any Keras backend.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import keras
from keras import layers

from specclass.models import register_model

log = logging.getLogger(__name__)


def _conv_out(length: int, kernel: int, stride: int) -> int:
    """Output length of a 'valid' convolution/pooling (Keras semantics)."""
    return (length - kernel) // stride + 1


def _tutorial_flat_length(input_length: int) -> int:
    """Pixels left after the tutorial's two conv + pool stages (< 1: input too short)."""
    length = input_length
    for kernel, stride in ((80, 10), (3, 3), (40, 10), (3, 3)):
        length = _conv_out(length, kernel, stride)
        if length < 1:
            return length
    return length


@register_model("spectral_tutorial")
def spectral_tutorial(
    input_length: int,
    n_classes: int,
    *,
    channels: int = 1,
    learning_rate: float = 1e-3,
) -> keras.Model:
    """The seed tutorial's network, kept exact as the baseline (Conv1D 64/80/10, 128/40/10).

    Layers, in order (all 'valid' padding)::

        Input (L, channels)
        Conv1D(64, kernel_size=80, strides=10, activation='relu')
        MaxPooling1D(pool_size=3)
        Dropout(0.35)
        Conv1D(128, kernel_size=40, strides=10, activation='relu')
        MaxPooling1D(pool_size=3)
        Dropout(0.35)
        Flatten()
        Dense(128, activation='relu')
        Dropout(0.35)
        Dense(n_classes, activation='softmax')

    compiled with Adam and sparse categorical cross-entropy, metric accuracy.
    Note that stride 10 over a kernel of 80 pixels on a 1e-4 dex grid (69 km/s
    per pixel) smears narrow emission lines ([NII], Hα, [OIII]); :func:`spectral_resnet`
    keeps them. Trained the specclass way (pipeline-labelled simulated spectra, augmentation,
    balanced class weights) this network is nevertheless the specclass default
    (``specclass.models.DEFAULT_MODEL``): it had the higher balanced accuracy in the 5-fold
    cross-validation on real SDSS FITS spectra (seed4 0.829 vs 0.649, README "Benchmarks").

    Args:
        input_length: pixels per spectrum ``L``; at least 1,870 for these strides.
        n_classes: number of classes.
        channels: input channels (1 = flux only, as in the tutorial).
        learning_rate: Adam learning rate (Keras default 1e-3).

    Returns:
        Compiled ``keras.Model`` named ``spectral_tutorial``.

    Raises:
        ValueError: if ``input_length`` is too short for the strides, or
            ``n_classes < 2``.
    """
    if _tutorial_flat_length(input_length) < 1:
        need = next(n for n in range(input_length, 100_000) if _tutorial_flat_length(n) >= 1)
        raise ValueError(
            f"spectral_tutorial: input_length={input_length} is too short for its "
            f"kernels and strides (needs at least {need} pixels)"
        )
    _check_classes("spectral_tutorial", n_classes, channels)
    model = keras.Sequential(
        [
            keras.Input(shape=(input_length, channels), name="spectrum"),
            layers.Conv1D(64, kernel_size=80, strides=10, activation="relu"),
            layers.MaxPooling1D(pool_size=3),
            layers.Dropout(0.35),
            layers.Conv1D(128, kernel_size=40, strides=10, activation="relu"),
            layers.MaxPooling1D(pool_size=3),
            layers.Dropout(0.35),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.35),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="spectral_tutorial",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _check_classes(name: str, n_classes: int, channels: int) -> None:
    if n_classes < 2:
        raise ValueError(f"{name}: n_classes must be >= 2, got {n_classes}")
    if channels not in (1, 2):
        raise ValueError(f"{name}: channels must be 1 (flux) or 2 (flux + weight), got {channels}")


def _residual_block(x: Any, filters: int, kernel_size: int, strides: int, name: str, kernel_size2: int = 3) -> Any:
    """Pre-activation-free ResNet basic block (He et al. 2016, arXiv:1512.03385), 1-D.

    conv(k, stride) -> BN -> ReLU -> conv(k2) -> BN, plus a shortcut (1x1 conv +
    BN when the shape changes), then ReLU.
    """
    shortcut = x
    y = layers.Conv1D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv1D(filters, kernel_size2, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv1D(filters, 1, strides=strides, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


@register_model("spectral_resnet")
def spectral_resnet(
    input_length: int,
    n_classes: int,
    *,
    channels: int = 1,
    filters: Sequence[int] = (16, 32, 48, 64),
    kernel_size: int = 5,
    stem_kernel: int = 7,
    stem_strides: int = 2,
    stem_pool: int = 2,
    head: str = "flatten",
    dropout: float = 0.3,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-4,
    decay_steps: int | None = None,
    warmup_steps: int = 0,
) -> keras.Model:
    """Small residual 1-D CNN that keeps emission-line resolution.

    It was the specclass default until the pipeline-labelled recipe, under which
    :func:`spectral_tutorial` cross-validated better (README "Benchmarks").

    Design (and why):

    * **Stem** ``Conv1D(filters[0], stem_kernel=7, strides=2)`` + BN + ReLU on
      the full-resolution input, then ``MaxPooling1D(2)``. On the SDSS 1e-4 dex
      grid a pixel is 69 km/s, so a narrow line (FWHM 150-400 km/s) spans 2-6
      pixels; a 7-pixel kernel evaluated every 2 pixels sees each whole line
      separately from its neighbours ([NII] 6548/6584 around Hα are 16 and 20 Å,
      ~10 pixels apart), and the max-pool keeps the peak response of a line
      rather than averaging it. The tutorial's kernel-80/stride-10 first layer
      averages those lines together before any non-linearity.
    * **Stages**: one residual basic block (He et al. 2016, arXiv:1512.03385) per
      entry of ``filters`` (default 16, 32, 48, 64): ``Conv1D(k=5, stride 2)`` +
      BN + ReLU + ``Conv1D(k=3)`` + BN, plus a 1x1 projection shortcut. The
      sampling halves per stage (64x coarser than the input after 4 stages) and
      the receptive field grows to ~490 pixels (~0.05 dex, ~500 Å at 4000 Å):
      enough for continuum slope, the 4000 Å break and broad QSO lines
      (FWHM ~5,000 km/s ~ 70 pixels).
    * **Batch normalisation** after every convolution.
    * **Head**: ``Flatten`` of the last stage (``head="flatten"``, the default;
      60 positions x 64 filters for a 3,801-pixel grid), so the classifier
      knows *where* on the observed grid a feature sits (continuum slope, which
      lines fall where). ``head="global"`` (global average + max pooling, 128
      features, 58k parameters in all) makes the features position-free. In
      5-fold cross-validation on the 266 real SDSS FITS spectra with 300
      simulated spectra per class in training (``benchmarks/cv_variants.py``,
      12 epochs; out-of-fold accuracy / balanced accuracy / LAMOST STAR
      recall) the pooled head did as well or better: seed4 0.857 / 0.660 /
      0.873 vs flatten 0.816 / 0.618 / 0.905; class3 0.883 / 0.839 / 0.939 vs
      0.898 / 0.831 / 0.834. But trained on the small real sets alone (no
      simulated spectra, 8 epochs, ``benchmarks/accuracy.py``) it collapsed
      to one or two classes (seed4 balanced accuracy 0.35 on the real FITS
      test split, LAMOST STAR recall ~0), where the flatten head gives
      0.74 / 0.48; so Flatten stays the default and the pooled head is an
      option for runs with simulated spectra
      (``benchmarks/results/cv-variants-*.md``, ``accuracy-global-head.md``).
    * **Dropout** then ``Dense(n_classes, softmax)``.
    * **AdamW** (decoupled weight decay, Loshchilov & Hutter 2019,
      arXiv:1711.05101); with ``decay_steps`` a cosine schedule with optional
      linear warm-up (``keras.optimizers.schedules.CosineDecay``);
      :func:`specclass.training.train` sets ``decay_steps`` to the run's total
      steps.
    * **Small on purpose** (~73k parameters, ~58k with ``head="global"``; ~6 M
      multiply-adds per 3,801-pixel spectrum, about as many as the tutorial
      network's ~5 M, and 1/5 of its 383k parameters).
      ``benchmarks/inference.py`` (preprocessing + ``model.predict``, batch
      256, 2 CPU cores, oneDNN off) gives the figures quoted in README.md,
      ~0.6x the tutorial network's rate; the target there is >= 2,000/s.
      Running the stem at stride 1 without pooling (``stem_strides=1,
      stem_pool=1``) keeps every pixel but is ~2-4x slower.

    Args:
        input_length: pixels per spectrum ``L`` (>= 2**len(filters)).
        n_classes: number of classes.
        channels: 1 = normalised flux; 2 = flux and good-pixel weight
            (see :class:`specclass.preprocessing.Preprocessor`).
        filters: filters per residual stage (one stride-2 block each). Keep
            them >= 16: with TensorFlow 2.21's oneDNN CPU kernels, training this
            network with 8-filter convolutions intermittently corrupted the heap
            (``double free or corruption``) on our 2-core AVX-512 machine, while
            16-64 filters, ``TF_ENABLE_ONEDNN_OPTS=0`` or the JAX backend did not;
            a warning is logged for fewer than 16 on TensorFlow.
        kernel_size: kernel of each block's first (strided) convolution; the second uses 3.
        stem_kernel: kernel of the full-resolution stem convolution.
        stem_strides: stride of the stem (1 or 2).
        stem_pool: max-pooling size after the stem (1 = none).
        head: ``"flatten"`` (default: keep every position of the last stage,
            like the tutorial network) or ``"global"`` (global average + max pooling).
        dropout: dropout rate before the classifier.
        learning_rate: peak learning rate.
        weight_decay: AdamW weight decay (0 gives Adam).
        decay_steps: total optimizer steps of the cosine schedule; ``None`` =
            constant learning rate.
        warmup_steps: linear warm-up steps (only with ``decay_steps``).

    Returns:
        Compiled ``keras.Model`` named ``spectral_resnet`` (sparse categorical
        cross-entropy, metric accuracy).

    Raises:
        ValueError: bad ``input_length``, ``n_classes``, ``channels`` or ``filters``.
    """
    _check_classes("spectral_resnet", n_classes, channels)
    filters = [int(f) for f in filters]
    if not filters or min(filters) < 1:
        raise ValueError(f"spectral_resnet: filters must be a non-empty list of positive ints, got {filters}")
    if min(filters) < 16 and keras.backend.backend() == "tensorflow":
        log.warning(
            "spectral_resnet: filters=%s has a stage with < 16 filters; TensorFlow's oneDNN CPU kernels have "
            "crashed training such networks (heap corruption). Use >= 16 or TF_ENABLE_ONEDNN_OPTS=0.", filters
        )
    if input_length < 2 ** len(filters):
        raise ValueError(
            f"spectral_resnet: input_length={input_length} is too short for {len(filters)} "
            f"stride-2 stages (needs >= {2 ** len(filters)})"
        )
    if head not in ("global", "flatten"):
        raise ValueError(f"spectral_resnet: head must be 'global' or 'flatten', got {head!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"spectral_resnet: dropout must be in [0, 1), got {dropout}")

    inputs = keras.Input(shape=(input_length, channels), name="spectrum")
    x = layers.Conv1D(filters[0], stem_kernel, strides=stem_strides, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    if stem_pool > 1:
        x = layers.MaxPooling1D(stem_pool, padding="same", name="stem_pool")(x)
    for i, f in enumerate(filters):
        x = _residual_block(x, f, kernel_size, strides=2, name=f"stage{i + 1}")
    if head == "flatten":
        pooled = layers.Flatten(name="flatten")(x)
    else:
        pooled = layers.Concatenate(name="pool")(
            [layers.GlobalAveragePooling1D(name="avg_pool")(x), layers.GlobalMaxPooling1D(name="max_pool")(x)]
        )
    if dropout:
        pooled = layers.Dropout(dropout, name="dropout")(pooled)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(pooled)
    model = keras.Model(inputs, outputs, name="spectral_resnet")

    lr: Any = learning_rate
    if decay_steps:
        warmup = int(warmup_steps)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=learning_rate if not warmup else learning_rate / 10,
            decay_steps=max(1, int(decay_steps) - warmup),
            alpha=0.01,
            warmup_target=learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    if weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=lr)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
