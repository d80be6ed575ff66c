"""The Keras MNIST track's networks: ``mnist_dense`` and ``mnist_cnn``.

Both take ``(batch_size, 28, 28)`` float32 images (see
:func:`specclass.datasets.mnist.normalise`) and return ``(batch_size, 10)``
softmax probabilities; both are compiled with sparse categorical cross-entropy
and the ``accuracy`` metric. The CNN starts with a ``Reshape`` to
``(28, 28, 1)``, so the same image array feeds both models (the tutorial reshapes
the data instead). Only stock Keras layers are used, so saved models reload in
plain Keras with ``safe_mode=True`` under any backend.

Input shape:
    ``(batch_size, 28, 28)`` float32 (``input_length = 28 * 28``).

Output shape:
    ``(batch_size, n_classes)`` softmax probabilities.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from specclass.models import register_model

#: Optimiser presets. ``"tutorial"`` is what the tutorial used for each network:
#: Adam for the dense net; Adadelta with learning rate 0.1 for the CNN.
#: ``"adamw"`` is Adam with decoupled weight decay (Loshchilov & Hutter 2019).
OPTIMIZERS = ("adam", "adamw", "adadelta", "tutorial")


def _image_side(input_length: int) -> int:
    side = math.isqrt(int(input_length))
    if side * side != int(input_length) or side < 8:
        raise ValueError(f"input_length must be the pixel count of a square image (e.g. 784 = 28*28), got {input_length}")
    return side


def _optimizer(
    name: str, learning_rate: float | None, tutorial: tuple[str, float], weight_decay: float = 0.004
) -> keras.optimizers.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if name == "tutorial":
        name, default_lr = tutorial
    else:
        default_lr = {"adam": 1e-3, "adamw": 1e-3, "adadelta": 1.0}[name]
    lr = default_lr if learning_rate is None else float(learning_rate)
    if not lr > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)
    return keras.optimizers.Adadelta(learning_rate=lr)


@register_model("mnist_dense")
def mnist_dense(
    input_length: int = 784,
    n_classes: int = 10,
    *,
    hidden_units: int = 128,
    optimizer: str = "adam",
    learning_rate: float | None = None,
    weight_decay: float = 0.004,
) -> keras.Model:
    """The tutorial's dense network: Flatten -> Dense(128, relu) -> Dense(10, softmax).

    Parameters: 784*128 + 128 = 100,480 in the hidden layer and 128*10 + 10 =
    1,290 in the output layer (101,770 in all) for 28x28 images.

    Args:
        input_length: pixels per image (a square: 784 for 28x28).
        n_classes: output classes (10 digits).
        hidden_units: width of the hidden Dense layer (tutorial: 128).
        optimizer: 'adam' (default and the tutorial's), 'adamw', 'adadelta', or
            'tutorial' (= Adam).
        learning_rate: overrides the optimiser's default (Adam 1e-3).
        weight_decay: decoupled weight decay of 'adamw' (default 0.004, Keras's; ignored by the others).

    Returns:
        A compiled ``keras.Model`` named ``mnist_dense``.

    Raises:
        ValueError: for a non-square ``input_length``, an unknown optimiser or a
            learning rate <= 0.
    """
    side = _image_side(input_length)
    inputs = keras.Input(shape=(side, side), name="image")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="mnist_dense")
    model.compile(
        optimizer=_optimizer(optimizer, learning_rate, ("adam", 1e-3), weight_decay),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


@register_model("mnist_cnn")
def mnist_cnn(
    input_length: int = 784,
    n_classes: int = 10,
    *,
    optimizer: str = "adam",
    learning_rate: float | None = None,
    weight_decay: float = 0.004,
) -> keras.Model:
    """The tutorial's CNN: Conv2D 32 -> Conv2D 64 -> MaxPool -> Dense 128 -> softmax.

    Layers, in order::

        Input (28, 28) -> Reshape (28, 28, 1)
        Conv2D(32, 3x3, relu)            # 320 parameters
        Conv2D(64, 3x3, relu)            # 18,496
        MaxPooling2D(2x2)
        Dropout(0.25)
        Flatten()                        # 12*12*64 = 9,216
        Dense(128, relu)                 # 1,179,776
        Dropout(0.5)
        Dense(10, softmax)               # 1,290   (1,199,882 in all)

    Args:
        input_length: pixels per image (a square: 784 for 28x28).
        n_classes: output classes.
        optimizer: 'adam' (specclass default, Adam 1e-3: reaches higher test
            accuracy than the tutorial's optimiser in 10 epochs; see
            ``benchmarks/mnist.py`` and README), 'tutorial' (Adadelta, learning
            rate 0.1, as in the tutorial), or 'adadelta' (Keras default rate 1.0).
        learning_rate: overrides the preset's learning rate.
        weight_decay: decoupled weight decay of 'adamw' (default 0.004, Keras's; ignored by the others).

    Returns:
        A compiled ``keras.Model`` named ``mnist_cnn``.

    Raises:
        ValueError: for a non-square ``input_length``, an unknown optimiser or a
            learning rate <= 0.
    """
    side = _image_side(input_length)
    inputs = keras.Input(shape=(side, side), name="image")
    x = layers.Reshape((side, side, 1), name="add_channel")(inputs)
    x = layers.Conv2D(32, (3, 3), activation="relu", name="conv1")(x)
    x = layers.Conv2D(64, (3, 3), activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D((2, 2), name="pool")(x)
    x = layers.Dropout(0.25, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="hidden")(x)
    x = layers.Dropout(0.5, name="dropout2")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="mnist_cnn")
    model.compile(
        optimizer=_optimizer(optimizer, learning_rate, ("adadelta", 0.1), weight_decay),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
