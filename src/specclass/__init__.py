"""specclass: turn public SDSS spectra into trained Keras classifiers.

The package reads like the pipeline:

query (:mod:`specclass.sdss.skyserver`) → download (:mod:`specclass.sdss.download`)
→ read (:mod:`specclass.io`) → grid (:mod:`specclass.spectra.grid`)
→ dataset (:mod:`specclass.spectra.dataset`) → model (:mod:`specclass.models`)
→ train (:mod:`specclass.training`) → evaluate (:mod:`specclass.evaluation`)
→ predict (:mod:`specclass.predict`), with cluster support in :mod:`specclass.cluster`.
"""

__version__ = "0.1.0"
