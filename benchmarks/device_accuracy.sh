#!/usr/bin/env bash
# The accuracy benchmark on a GPU machine without TensorFlow or ../shared (how the
# "GPU" rows of benchmarks/results/accuracy-gpu-*.md were made).
#
# Prepare on the machine that has ../shared (repository root):
#   .venv/bin/python benchmarks/accuracy.py --save-bundle benchmarks/results/tmp/acc-bundle.npz
#   pip download keras, namex, optree, astropy, pyerfa, astropy-iers-data wheels into .whl/
#     (cp312 manylinux; see the device notes in the project README)
# then, on the GPU machine, from the repository root with those two paths copied along:
#   OUT=some/folder bash benchmarks/device_accuracy.sh
# Keras runs on JAX (KERAS_BACKEND=jax); the same code trains on TensorFlow here.
set -u
OUT=${OUT:-benchmarks/results/tmp/device}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
BUNDLE=${BUNDLE:-benchmarks/results/tmp/acc-bundle.npz}
EPOCHS=${EPOCHS:-20}
nvidia-smi -L 2>/dev/null
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" || exit 1
# 1. 5-fold cross-validation over all real spectra, real + simulated training, both networks, both schemes
python3 benchmarks/accuracy.py --bundle "$BUNDLE" --folds 5 --selections all --train-sets real+sim \
  --epochs "$EPOCHS" --out "$OUT" --work /tmp/acc-cv --stem accuracy-gpu-cv5 2>&1 | grep -v "^W0000\|^I0000"
# 2. the single-split benchmark (all 16 trainings) at the same epochs
python3 benchmarks/accuracy.py --bundle "$BUNDLE" --epochs "$EPOCHS" --out "$OUT" --work /tmp/acc-split \
  --stem accuracy-gpu-split 2>&1 | grep -v "^W0000\|^I0000"
