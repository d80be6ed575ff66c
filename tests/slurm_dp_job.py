"""Train a small Keras classifier on real SDSS star spectra, on one or several processes.

Run by ``tests/test_slurm_cluster.py`` as ``srun -n 2 python tests/slurm_dp_job.py …``
(two processes, ``keras.distribution`` on JAX through
:func:`specclass.cluster.distribute.get_strategy`) and as one plain process; both
write their loss history and final weights to ``OUT/result-<process>.npz`` so the
test can compare them.

Data: the first ``--rows`` rows and ``--pixels`` pixels of
``sdss/arrays/sdss_star_spectra_txt.npz`` (real SDSS stellar spectra; label = the
spectral type letter of the SDSS subclass), each spectrum divided by its median
absolute flux.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def load(npz: Path, rows: int, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.load(npz, allow_pickle=False)
    flux = np.nan_to_num(d["flux"][:rows, :pixels].astype(np.float32))
    scale = np.median(np.abs(flux), axis=1, keepdims=True)
    flux /= np.where(scale > 0, scale, 1.0)
    letters = np.array([s[:1] for s in d["subclass"][:rows]])
    classes = sorted(set(letters.tolist()))
    return flux, np.array([classes.index(c) for c in letters], dtype=np.int32)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--strategy", default="auto")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--pixels", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32, help="global batch size")
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args(argv)

    from specclass.cluster.distribute import get_strategy, process_batch_rows

    strategy = get_strategy(a.strategy)
    import keras

    print(strategy.describe(), flush=True)
    x, y = load(a.data, a.rows, a.pixels)
    n_classes = int(y.max()) + 1
    rows = process_batch_rows(len(x), a.batch_size, strategy.process_index, strategy.num_processes)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([
            keras.Input((x.shape[1],)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(n_classes, activation="softmax"),
        ])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    hist = model.fit(x[rows], y[rows], batch_size=strategy.local_batch_size(a.batch_size),
                     epochs=a.epochs, shuffle=False, verbose=0)
    weights = [np.asarray(w) for w in model.get_weights()]
    a.out.mkdir(parents=True, exist_ok=True)
    np.savez(a.out / f"result-{strategy.process_index}.npz", loss=np.array(hist.history["loss"]),
             num_processes=strategy.num_processes, **{f"w{i}": w for i, w in enumerate(weights)})
    print(f"process {strategy.process_index}/{strategy.num_processes} loss {hist.history['loss']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main(sys.argv[1:]))
