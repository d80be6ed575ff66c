"""specclass: turn public SDSS spectra into trained Keras classifiers.

The package reads like the pipeline:

query (:mod:`specclass.sdss.skyserver`) → download (:mod:`specclass.sdss.download`)
→ read (:mod:`specclass.io`) → grid (:mod:`specclass.spectra.grid`)
→ dataset (:mod:`specclass.spectra.dataset`) → model (:mod:`specclass.models`)
→ train (:mod:`specclass.training`) → evaluate (:mod:`specclass.evaluation`)
→ predict (:mod:`specclass.predict`), with cluster support in :mod:`specclass.cluster`.
"""

import os as _os

# TensorFlow's oneDNN CPU kernels crashed (heap corruption, "double free or
# corruption") in about half of the training runs of the spectral ResNet on real
# data here (TF 2.21, x86-64); with them off no crash was seen. It costs some CPU
# speed; set TF_ENABLE_ONEDNN_OPTS=1 yourself (before importing specclass) to
# take the risk. Only effective if TensorFlow has not been imported yet.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__version__ = "0.1.0"
