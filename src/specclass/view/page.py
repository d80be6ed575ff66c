"""The viewer page: one self-contained HTML file built with bokeh (no CDN, works offline).

Layout: filters, a table of the spectra (sorted by confidence) and Prev / Next on
the left; the selected spectrum in the middle (flux, its 1σ band from ivar,
masked pixels shaded, optional ivar-weighted smoothing, emission and absorption
lines at the pipeline or a typed redshift, zoom / pan tools); its class
probabilities and the visual-inspection buttons on the right.

Bokeh (https://docs.bokeh.org) does the plotting, the widgets and the page; the
interaction is one ``CustomJS`` callback, ``viewer.js`` beside this module, that
every widget calls. Spectra live in one ``ColumnDataSource`` that no glyph draws,
as int16 codes (:func:`specclass.view.data.encode_spectra`); only the selected
spectrum is decoded into the plot, so thousands of spectra stay responsive. The
JavaScript and CSS of bokeh are inlined (``bokeh.resources.INLINE``).

Marks (the class a user gives a spectrum by eye) are kept in the browser's
``localStorage`` for this page and exported as CSV with columns ``name, file,
predicted_class, probability, pipeline_class, z, visual_class``.
"""

from __future__ import annotations

import math
import os
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from specclass.atomic import write_text_atomic
from specclass.view.data import NO_LABEL, ViewerData, bin_pixels, encode_spectra
from specclass.view.lines import default_lines

#: Extra choices of the visual-inspection buttons, after the model's classes.
EXTRA_MARKS = ("UNSURE", "BAD")

#: Name of the CSV the export button downloads.
EXPORT_NAME = "visual-marks.csv"

EMISSION_COLOR = "#1a9641"
ABSORPTION_COLOR = "#d7301f"
PREDICTED_COLOR = "#2c7fb8"


def _controller_code() -> str:
    return resources.files("specclass.view").joinpath("viewer.js").read_text(encoding="utf-8")


def _rows_source(data: ViewerData) -> dict[str, Any]:
    n = len(data)
    cols: dict[str, Any] = {
        "rank": np.arange(1, n + 1),
        "name": data.meta["name"].tolist(),
        "key": [f"{a}|{b}" for a, b in zip(data.meta["name"], data.meta["file"])],
        "file": data.meta["file"].tolist(),
        "predicted": data.predicted.tolist(),
        "probability": data.probability,
        "uncertain": ["yes" if u else "" for u in data.uncertain],
        "pipeline": data.meta["pipeline"].tolist(),
        "subclass": data.meta["subclass"].tolist(),
        "agreement": data.agreement.tolist(),
        "z": data.meta["z"],
        "zwarning": data.meta["zwarning"],
        "source": data.meta["source"].tolist(),
        "mark": [""] * n,
    }
    for k, c in enumerate(data.class_names):
        cols[f"p_{c}"] = data.proba[:, k].astype(np.float64)
    return cols


def build_layout(data: ViewerData, *, bin_factor: int = 2) -> tuple[Any, Any]:
    """Bokeh layout of the viewer and the controller callback (see module docstring).

    Args:
        data: the spectra; shown in their order (use :meth:`ViewerData.by_confidence`).
        bin_factor: pixels merged per stored pixel (:func:`specclass.view.data.bin_pixels`).

    Returns:
        ``(layout, controller)``: the root model and the ``CustomJS`` to run when
        the document is ready.
    """
    from bokeh.models import (Button, CDSView, CheckboxButtonGroup, ColumnDataSource, CustomJS, DataTable, Div,
                              FactorRange, IndexFilter, LabelSet, NumberFormatter, RadioButtonGroup, Range1d,
                              RangeSlider, Select, Spinner, TableColumn, TextInput)
    from bokeh.layouts import column, row
    from bokeh.plotting import figure

    loglam, flux, ivar = bin_pixels(data.loglam, data.flux, data.ivar, bin_factor)
    packed = encode_spectra(flux, ivar)
    n = len(data)
    classes = list(data.class_names)
    step = float(loglam[1] - loglam[0]) if loglam.size > 1 else 1e-4
    wmin, wmax = 10 ** (loglam[0] - step / 2), 10 ** (loglam[-1] + step / 2)
    lines = default_lines()

    rows = ColumnDataSource(_rows_source(data), name="rows")
    rows.selected.name = "selection"
    store = ColumnDataSource(packed, name="store")
    filt = IndexFilter(indices=list(range(n)), name="filter")
    spec = ColumnDataSource({"x": [], "flux": [], "lo": [], "hi": []}, name="spectrum_data")
    masked = ColumnDataSource({"x0": [], "x1": []}, name="masked_data")
    line_src = ColumnDataSource({"x": [], "name": [], "color": []}, name="lines_data")
    probs = ColumnDataSource({"cls": classes, "p": [0.0] * len(classes), "text": [""] * len(classes),
                              "color": ["#bbbbbb"] * len(classes)}, name="probs_data")

    # ---- filters
    pipe_labels = sorted({p or NO_LABEL for p in data.meta["pipeline"]} | set(classes),
                         key=lambda c: (c == NO_LABEL, c))
    pred = CheckboxButtonGroup(labels=classes, active=list(range(len(classes))), name="pred")
    pipe = CheckboxButtonGroup(labels=pipe_labels, active=list(range(len(pipe_labels))), name="pipe")
    agree = Select(title="model vs pipeline", value="all", options=["all", "agree", "disagree", NO_LABEL],
                   name="agree", width=170)
    unsure = Select(title="uncertain", value="all", options=["all", "uncertain only", "confident only"],
                    name="unsure", width=170)
    prob = RangeSlider(title="top probability", start=0, end=1, step=0.01, value=(0, 1), name="prob", width=360)
    sources = sorted(set(data.meta["source"].tolist()) - {""})
    source = Select(title="source", value="all", options=["all", *sources], name="source", width=170)
    search = TextInput(title="name or file contains", value="", name="search", width=170)
    count = Div(text="", name="count", width=360)
    columns = [
        TableColumn(field="rank", title="#", width=30),
        TableColumn(field="name", title="spectrum", width=200),
        TableColumn(field="predicted", title="model", width=55),
        TableColumn(field="probability", title="p", width=45, formatter=NumberFormatter(format="0.000")),
        TableColumn(field="pipeline", title="pipeline", width=60),
        TableColumn(field="mark", title="by eye", width=45),
    ]
    tview = CDSView(filter=filt)
    table = DataTable(source=rows, view=tview, columns=columns, width=380, height=330,
                      sortable=False, reorderable=False, index_position=None, name="table",
                      selectable=True, scroll_to_selection=True)
    prev_b = Button(label="◀ Prev", name="prev", width=90)
    next_b = Button(label="Next ▶", name="next", width=90)

    # ---- spectrum
    fig = figure(width=760, height=430, x_range=Range1d(wmin, wmax), y_range=Range1d(-1, 1),
                 tools="xpan,xwheel_zoom,box_zoom,pan,wheel_zoom,reset,save", active_drag="box_zoom",
                 active_scroll="xwheel_zoom", x_axis_label="observed vacuum wavelength (Å)",
                 y_axis_label="flux (1e-17 erg/s/cm²/Å)", name="spectrum", output_backend="canvas")
    fig.toolbar.logo = None
    fig.vstrip(x0="x0", x1="x1", source=masked, fill_color="#f4a582", fill_alpha=0.35, line_alpha=0,
               legend_label="masked (ivar = 0)")
    fig.varea(x="x", y1="lo", y2="hi", source=spec, fill_color="#9ecae1", fill_alpha=0.7, legend_label="±1σ")
    fig.line(x="x", y="flux", source=spec, line_color="black", line_width=1, legend_label="flux")
    fig.vspan(x="x", source=line_src, line_color="color", line_dash="dashed", line_alpha=0.8, line_width=1)
    fig.add_layout(LabelSet(x="x", y=6, y_units="screen", text="name", source=line_src, angle=math.pi / 2,
                            text_font_size="9pt", text_color="color", x_offset=-2, text_baseline="bottom"))
    fig.legend.location = "top_right"
    fig.legend.background_fill_alpha = 0.6
    fig.legend.click_policy = "hide"
    smoothing = Spinner(title="smooth (pixels)", low=0, high=51, step=2, value=0,
                        name="smooth", width=150)
    z = TextInput(title="redshift for the line markers", value="", name="z", width=170)
    zreset = Button(label="pipeline z", name="zreset", width=90, margin=(24, 5, 5, 5))
    status = Div(text="", name="status", width=360, margin=(28, 5, 5, 5))
    info = Div(text="", name="info", width=760)

    # ---- probabilities and marks
    pfig = figure(width=230, height=40 + 45 * len(classes), y_range=FactorRange(*reversed(classes)),
                  x_range=Range1d(0, 1.3), tools="", toolbar_location=None, title="class probabilities",
                  name="probabilities")
    pfig.hbar(y="cls", right="p", height=0.7, source=probs, fill_color="color", line_color=None)
    pfig.add_layout(LabelSet(x="p", y="cls", text="text", source=probs, x_offset=3, y_offset=-6,
                             text_font_size="9pt"))
    pfig.xgrid.grid_line_color = None
    mark_labels = [*classes, *EXTRA_MARKS]
    mark = RadioButtonGroup(labels=mark_labels, active=None, name="mark", orientation="vertical", width=120)
    exportb = Button(label="Export 0 marks (CSV)", name="export", button_type="primary", width=200)
    marks_help = Div(text="<b>Class by eye</b> (click again on the next spectrum; marks stay in this browser "
                          "until exported)", width=220)

    cfg = {
        "loglam0": float(loglam[0]), "dloglam": step, "wmin": wmin, "wmax": wmax, "classes": classes,
        "mark_labels": mark_labels, "no_label": NO_LABEL, "page_id": uuid.uuid4().hex,
        "line_rest": [ln.rest for ln in lines], "line_name": [ln.name for ln in lines],
        "line_kind": [ln.kind for ln in lines], "emission_color": EMISSION_COLOR,
        "absorption_color": ABSORPTION_COLOR, "predicted_color": PREDICTED_COLOR, "export_name": EXPORT_NAME,
    }
    controller = CustomJS(args=dict(
        rows=rows, store=store, filt=filt, tview=tview, spec=spec, masked=masked, lines=line_src, probs=probs, fig=fig,
        pred=pred, pipe=pipe, agree=agree, unsure=unsure, prob=prob, source=source, search=search, count=count,
        info=info, smoothing=smoothing, z=z, mark=mark, exportb=exportb, status=status, cfg=cfg,
    ), code=_controller_code())
    for w, attr in ((pred, "active"), (pipe, "active"), (agree, "value"), (unsure, "value"), (prob, "value"),
                    (source, "value"), (search, "value"), (smoothing, "value"), (z, "value"), (mark, "active")):
        w.js_on_change(attr, controller)
    rows.selected.js_on_change("indices", controller)
    for b in (prev_b, next_b, zreset, exportb):
        b.js_on_event("button_click", controller)

    title = Div(text=f"<h2 style='margin:4px 0'>{_escape(data.title)}</h2>", width=1400)
    left = column(Div(text="<b>predicted class</b>"), pred, Div(text="<b>pipeline class</b>"), pipe,
                  row(agree, unsure), prob, row(source, search), count, table, row(prev_b, next_b), width=390)
    middle = column(info, fig, row(smoothing, z, zreset), status)
    right = column(pfig, marks_help, mark, exportb, width=240)
    return column(title, row(left, middle, right)), controller


def _escape(text: str) -> str:
    import html

    return html.escape(str(text), quote=True)


def render_viewer(data: ViewerData, *, bin_factor: int = 2) -> str:
    """The viewer page for ``data`` as one self-contained HTML string.

    Args:
        data: spectra and predictions; sorted here by decreasing top probability.
        bin_factor: pixels merged per stored pixel (1 keeps the full resolution;
            2 halves the page size and keeps ~2 pixels per SDSS resolution element).

    Raises:
        ValueError: ``data`` holds no spectrum, or ``bin_factor`` is out of range.
    """
    from bokeh.document import Document
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    if len(data) == 0:
        raise ValueError("no spectrum to show")
    layout, controller = build_layout(data.by_confidence(), bin_factor=bin_factor)
    doc = Document()
    doc.add_root(layout)
    doc.js_on_event("document_ready", controller)
    return file_html(doc, resources=INLINE, title=data.title)


def write_viewer(path: str | os.PathLike, data: ViewerData, *, bin_factor: int = 2) -> Path:
    """Write :func:`render_viewer`'s page to ``path`` atomically and return the path."""
    return write_text_atomic(path, render_viewer(data, bin_factor=bin_factor))
