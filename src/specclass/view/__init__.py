"""``specclass view``: an interactive, self-contained HTML page of spectra and their predicted classes.

* :mod:`specclass.view.data` - :class:`~specclass.view.data.ViewerData` and its loaders
  (run + dataset, run + files, ``predictions.csv`` + spectra), compact encoding;
* :mod:`specclass.view.page` - the bokeh page (:func:`~specclass.view.page.write_viewer`);
* :mod:`specclass.view.lines` - the emission / absorption lines it marks.

Bokeh is imported only when a page is built.
"""

from specclass.view.data import ViewerData, from_dataset, from_files, from_predictions_csv
from specclass.view.page import render_viewer, write_viewer

__all__ = ["ViewerData", "from_dataset", "from_files", "from_predictions_csv", "render_viewer", "write_viewer"]
