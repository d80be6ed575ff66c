"""One self-contained ``report.html`` per run.

The page has no external assets: images are inlined as base64 PNG ``data:`` URIs,
the style sheet is inline, there is no JavaScript. It shows the run
configuration, a dataset summary, the metrics (accuracy, balanced accuracy,
per-class precision / recall / F1 with counts), small-class warnings, the
calibration (temperature, ECE raw and calibrated, coverage and accuracy of the
spectra not flagged uncertain), the confusion matrices, the curves, the ZWARNING / source breakdowns and the
misclassified examples (gallery and table). Spectral and MNIST runs use the same
page; sections without data are left out.
"""

from __future__ import annotations

import base64
import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from specclass.evaluation import write_text_atomic

#: Rows of the misclassified table shown in the page (the CSV has all of them).
MAX_TABLE_ROWS = 200
#: Title of the confusion-matrix section (an image of that name gets the table under it).
CONFUSION_TITLE = "Confusion matrix"

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}.warn{background:#fff4e0;border-left:4px solid #e69500;
padding:.4em .8em;margin:.3em 0}.small{color:#a55}img{max-width:100%;border:1px solid #eee}
.kv td:first-child{text-align:left;font-weight:600}code{font-size:.9em}
"""


def image_data_uri(path: str | os.PathLike) -> str:
    """``data:image/png;base64,...`` URI of the PNG file at ``path``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a PNG (checked by its 8-byte signature).
    """
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path}: not a PNG file; only PNG images are inlined in reports")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _rounded(value: Any, digits: int = 4) -> Any:
    """``value`` with every float (also inside dicts/lists) cut to ``digits`` significant digits."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if value == value and abs(value) != float("inf") else value
    if isinstance(value, Mapping):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value


def _kv_table(items: Mapping[str, Any]) -> str:
    rows = []
    for key, value in items.items():
        value = _rounded(value)  # a best score of 0.37303122878074646 reads as 0.373
        if isinstance(value, (dict, list)):
            value = json.dumps(value, default=str)
        elif value is None:
            value = "–"
        rows.append(f"<tr><td>{_e(key)}</td><td class='l'><code>{_e(value)}</code></td></tr>")
    return "<table class='kv'>" + "".join(rows) + "</table>"


def _metrics_section(metrics: Mapping[str, Any]) -> str:
    parts = ["<table><tr><th class='l'>metric</th><th>value</th></tr>"]
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy (mean per-class recall)"),
                       ("keras_accuracy", "accuracy (keras.metrics.Accuracy)"), ("n", "examples")):
        if key in metrics:
            parts.append(f"<tr><td class='l'>{_e(label)}</td><td>{_fmt(metrics[key])}</td></tr>")
    parts.append("</table>")
    per_class = metrics.get("per_class") or []
    if per_class:
        parts.append("<table><tr><th class='l'>class</th><th>support (true)</th><th>predicted</th>"
                     "<th>precision</th><th>recall</th><th>F1</th></tr>")
        for row in per_class:
            cls = " class='l small'" if row.get("small") else " class='l'"
            flag = " ⚠" if row.get("small") else ""
            parts.append(
                f"<tr><td{cls}>{_e(row['name'])}{flag}</td><td>{row['support']}</td><td>{row.get('predicted', '')}</td>"
                f"<td>{_fmt(row['precision'], 3)}</td><td>{_fmt(row['recall'], 3)}</td><td>{_fmt(row['f1'], 3)}</td></tr>"
            )
        parts.append("</table>")
    for w in metrics.get("warnings") or []:
        parts.append(f"<div class='warn'>⚠ {_e(w)}</div>")
    return "".join(parts)


def _calibration_section(cal: Mapping[str, Any]) -> str:
    sel = cal.get("selective") or {}
    thr = cal.get("uncertain_below")
    rows = [
        ("probabilities", _e(cal.get("probabilities") or cal.get("method", ""))),
        ("temperature T", _fmt(cal.get("temperature"), 3)),
        (f"expected calibration error, raw softmax ({cal.get('n_bins')} bins)", _fmt(cal.get("ece_raw"), 4)),
        ("expected calibration error, calibrated", _fmt(cal.get("ece_calibrated"), 4)),
        ("negative log-likelihood, raw → calibrated",
         f"{_fmt(cal.get('nll_raw'), 4)} → {_fmt(cal.get('nll_calibrated'), 4)}"),
        (f"uncertain (top calibrated probability &lt; {_fmt(thr, 2)})",
         f"{sel.get('n_uncertain', '–')} of {sel.get('n', '–')}"),
        ("coverage (fraction not uncertain)", _fmt(sel.get("coverage"), 3)),
        ("accuracy on the covered spectra", _fmt(sel.get("accuracy"), 4)),
        ("balanced accuracy on the covered spectra", _fmt(sel.get("balanced_accuracy"), 4)),
        ("accuracy on the uncertain spectra", _fmt(sel.get("accuracy_uncertain"), 4)),
    ]
    body = "".join(f"<tr><td class='l'>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return ("<p>Temperature scaling (Guo et al. 2017, arXiv:1706.04599) fitted on the validation split; "
            "ECE as Naeini et al. 2015 / Guo et al. eq. 3. The predicted class is the same with and without "
            "it; a spectrum is <em>uncertain</em> when its top calibrated probability is below the threshold."
            "</p><table><tr><th class='l'>calibration</th><th>value</th></tr>" + body + "</table>")


def _confusion_table(cm: Mapping[str, Any]) -> str:
    labels = cm["labels"]
    head = "".join(f"<th>{_e(c)}</th>" for c in labels)
    rows = []
    for name, counts, norm in zip(labels, cm["counts"], cm["normalized"]):
        cells = "".join(
            f"<td>{c}<br><small>{'–' if f is None else f'{f:.2f}'}</small></td>" for c, f in zip(counts, norm)
        )
        rows.append(f"<tr><th class='l'>{_e(name)}</th>{cells}</tr>")
    return (f"<p>rows: true class, columns: predicted class (counts, and row-normalised fraction), "
            f"in the model's saved class order.</p><table><tr><th class='l'>true \\ predicted</th>{head}</tr>"
            + "".join(rows) + "</table>")


def _group_table(groups: Mapping[str, Any], title: str) -> str:
    rows = [f"<tr><th class='l'>{_e(title)}</th><th>n</th><th>correct</th><th>accuracy</th></tr>"]
    for name, g in groups.items():
        if not isinstance(g, Mapping) or "n" not in g:
            continue
        rows.append(f"<tr><td class='l'>{_e(name)}</td><td>{g['n']}</td><td>{g['n_correct']}</td>"
                    f"<td>{_fmt(g['accuracy'], 3)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _misclassified_table(rows: list[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p>No misclassified examples.</p>"
    has_ids = any(r.get("plate", -1) >= 0 or r.get("file") for r in rows)
    cols = ["index"] + (["file", "plate", "mjd", "fiberid"] if has_ids else []) + ["true", "predicted", "probability"]
    out = []
    if has_ids:
        # a dataset records each file as given to the build (relative to where it ran, or absolute):
        # show one form, the file name, and keep the recorded path as a tooltip and in the CSV
        out.append("<p>file: the spectrum's file name; hover for the path recorded when the dataset was built "
                   "(misclassified.csv has it too).</p>")
    out.append("<table><tr>" + "".join(f"<th class='l'>{_e(c)}</th>" for c in cols) + "</tr>")
    for r in rows[:MAX_TABLE_ROWS]:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if c == "file" and v:
                cells.append(f"<td class='l' title='{_e(v)}'>{_e(Path(str(v)).name)}</td>")
                continue
            cells.append(f"<td class='l'>{_fmt(v, 3)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    if len(rows) > MAX_TABLE_ROWS:
        out.append(f"<p>First {MAX_TABLE_ROWS} of {len(rows)} shown (most confident first); "
                   "misclassified.csv has them all.</p>")
    return "".join(out)


def render_report(
    *,
    title: str,
    config: Mapping[str, Any] | None = None,
    dataset: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    images: Mapping[str, str | os.PathLike] | None = None,
    links: Mapping[str, str] | None = None,
) -> str:
    """Return the report page as an HTML string (see :func:`write_report`)."""
    metrics = metrics or {}
    images = images or {}
    body = [f"<h1>{_e(title)}</h1>",
            f"<p>Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by specclass.</p>"]
    body += [f"<p class='link'>→ <a href='{_e(href)}'>{_e(text)}</a></p>" for text, href in (links or {}).items()]
    if metrics:
        body.append("<h2>Metrics</h2>" + _metrics_section(metrics))
    if metrics.get("calibration"):
        body.append("<h2>Calibration and uncertain spectra</h2>" + _calibration_section(metrics["calibration"]))
    # one "Confusion matrix" section: the figure (when there is one) and the table under it
    cm_table = _confusion_table(metrics["confusion_matrix"]) if "confusion_matrix" in metrics else ""
    if cm_table and CONFUSION_TITLE not in images:
        body.append(f"<h2>{CONFUSION_TITLE}</h2>" + cm_table)
    for name, path in images.items():
        extra = cm_table if name == CONFUSION_TITLE else ""
        body.append(f"<h2>{_e(name)}</h2><img alt='{_e(name)}' src='{image_data_uri(path)}'>{extra}")
    if metrics.get("by_zwarning"):
        z = dict(metrics["by_zwarning"])
        per_bit = z.pop("per_bit", {}) or {}
        body.append("<h2>By ZWARNING</h2>" + _group_table(z, "ZWARNING"))
        if per_bit:
            body.append(_group_table(per_bit, "bit set"))
    if metrics.get("by_source"):
        body.append("<h2>By data source</h2>" + _group_table(metrics["by_source"], "source"))
    if dataset:
        body.append("<h2>Dataset</h2>" + _kv_table(dataset))
    if config:
        body.append("<h2>Run configuration</h2>" + _kv_table(config))
    if "misclassified" in metrics:
        body.append(f"<h2>Misclassified examples ({len(metrics['misclassified'])})</h2>"
                    + _misclassified_table(list(metrics["misclassified"])))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(
    path: str | os.PathLike,
    *,
    title: str,
    config: Mapping[str, Any] | None = None,
    dataset: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    images: Mapping[str, str | os.PathLike] | None = None,
    links: Mapping[str, str] | None = None,
) -> Path:
    """Write a self-contained ``report.html`` atomically and return its path.

    Args:
        path: the HTML file to write.
        title: page title.
        config: the run's configuration (``config.json`` content), shown as a table.
        dataset: dataset summary (e.g. from :func:`specclass.evaluation.dataset_summary`).
        metrics: a dict from :func:`specclass.evaluation.evaluate_predictions`
            (optionally with ``keras_accuracy``).
        images: ``{section title: PNG path}``; each PNG is embedded as base64.
        links: ``{text: relative URL}`` shown under the title (e.g. the viewer page of
            the misclassified spectra, written beside the report).

    Raises:
        ValueError: if an image is not a PNG.
        FileNotFoundError: if an image file is missing.
    """
    text = render_report(title=title, config=config, dataset=dataset, metrics=metrics, images=images, links=links)
    return write_text_atomic(path, text)
