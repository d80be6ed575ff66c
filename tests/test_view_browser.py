"""The viewer page in a real headless chromium: filter, open a spectrum, zoom, mark, export.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and the
``browser`` extra (selenium); skipped with the reason otherwise. Widgets live in bokeh's
shadow DOM, so elements are found with a query that walks every shadow root.
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("bokeh")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e '.[browser]'")

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

from specclass.view import from_predictions_csv, write_viewer  # noqa: E402
from test_view_data import sample_predictions  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="headless browser missing: apt-get install chromium chromium-driver (as .ci/run does)",
)

#: ``deep(selector)``: every element matching it, in the page and in every shadow root.
DEEP = """
const deep = (root, sel, out) => {
  root.querySelectorAll(sel).forEach((e) => out.push(e));
  root.querySelectorAll('*').forEach((e) => { if (e.shadowRoot) deep(e.shadowRoot, sel, out); });
  return out;
};
"""


def _chrome(download_dir: Path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1450,900"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


class Page:
    """The viewer as a user sees it: texts of its widgets, elements to click."""

    def __init__(self, driver):
        self.d = driver

    def wait(self, condition, timeout: float = 20.0, what: str = ""):
        t0 = time.time()
        while time.time() - t0 < timeout:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")

    def find(self, selector: str, text: str | None = None):
        """Elements matching ``selector`` anywhere (shadow roots too), whose text is ``text`` if given."""
        els = self.d.execute_script(DEEP + "return deep(document, arguments[0], []);", selector)
        return [e for e in els if text is None or e.text.strip() == text]

    def model(self, name: str, attr: str):
        return self.d.execute_script(
            "return Bokeh.documents[0].get_model_by_name(arguments[0])[arguments[1]];", name, attr)

    def div(self, name: str) -> str:
        """Visible text of the Div called ``name``."""
        return self.d.execute_script(
            DEEP + "const v = Bokeh.index.get_one_by_id(Bokeh.documents[0].get_model_by_name(arguments[0]).id);"
                   "return v.el.shadowRoot.textContent;", name)

    def table_rows(self) -> list[list[str]]:
        """Cell texts of the table rows in view, top to bottom."""
        rows = {}
        for r in self.find(".slick-row"):
            top = int(self.d.execute_script("return arguments[0].offsetTop;", r))
            rows[top] = [c.text for c in r.find_elements("css selector", ".slick-cell")]
        return [rows[k] for k in sorted(rows)]

    def button(self, label: str):
        found = self.find("button", label)
        assert found, f"no button {label!r}"
        return found[0]


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("viewer")
    data = from_predictions_csv(sample_predictions(d / "predictions.csv"))
    data.title = "sample spectra"
    return write_viewer(d / "viewer.html", data)


@pytest.fixture()
def page(page_file, tmp_path):
    driver = _chrome(tmp_path)
    try:
        driver.get(page_file.as_uri())
        p = Page(driver)
        p.wait(lambda: driver.execute_script(
            "return !!(window.Bokeh && Bokeh.documents.length && "
            "Bokeh.documents[0].get_model_by_name('count').text)"), what="the page to start")
        p.downloads = tmp_path
        yield p
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_page_opens_on_the_most_confident_spectrum_with_its_lines(page):
    assert "8 of 8 spectra shown" in page.div("count")
    rows = page.table_rows()
    assert rows[0][1:4] == ["0266-51602-0013", "GALAXY", "0.970"]
    assert [r[3] for r in rows] == sorted((r[3] for r in rows), reverse=True)  # by confidence
    info = page.div("info")
    assert "0266-51602-0013" in info and "predicted GALAXY" in info and "pipeline GALAXY" in info
    assert "lines at z = 0.1213 (pipeline)" in page.div("status")
    assert page.model("z", "value") == "0.12132"
    assert len(page.d.execute_script(
        "return Bokeh.documents[0].get_model_by_name('spectrum_data').data.x")) > 1000


def test_filter_then_open_a_spectrum_and_type_a_redshift(page):
    Select(page.find("select")[0]).select_by_visible_text("disagree")  # model vs pipeline
    page.wait(lambda: "1 of 8 spectra shown" in page.div("count"), what="the disagree filter")
    assert [r[1] for r in page.table_rows()] == ["0390-51900-0282"]
    assert "predicted QSO" in page.div("info") and "pipeline GALAXY" in page.div("info")
    Select(page.find("select")[0]).select_by_visible_text("all")
    page.button("STAR").click()  # predicted class: drop STAR
    page.wait(lambda: "7 of 8 spectra shown" in page.div("count"), what="the class filter")
    assert "STAR" not in [r[2] for r in page.table_rows()]
    # open a spectrum: click its row in the table
    target = [c for c in page.find(".slick-cell") if c.text == "0516-52017-0139"][0]
    target.click()
    page.wait(lambda: "0516-52017-0139" in page.div("info"), what="the clicked spectrum")
    assert "lines at z = 3.2330 (pipeline)" in page.div("status")
    masked = page.d.execute_script("return Bokeh.documents[0].get_model_by_name('masked_data').data.x0.length")
    assert masked >= 1  # its masked pixels are shaded
    z = page.find("input[type=text]")
    zbox = [e for e in z if e.get_attribute("value") == "3.23299"][0]
    zbox.clear()
    zbox.send_keys("2.5\n")
    page.wait(lambda: "lines at z = 2.5000 (typed)" in page.div("status"), what="the typed redshift")
    xs = page.d.execute_script("return Bokeh.documents[0].get_model_by_name('lines_data').data.x")
    assert abs(min(xs) - 1215.67 * 3.5) < 1e-6
    page.button("Next ▶").click()
    page.wait(lambda: "0516-52017-0139" not in page.div("info"), what="Next")


def test_zoom_smooth_mark_and_export(page):
    rng = page.d.execute_script("const r = Bokeh.documents[0].get_model_by_name('spectrum').x_range;"
                                "return [r.start, r.end];")
    canvas = [c for c in page.find("canvas") if c.size["width"] > 600][0]
    ActionChains(page.d).move_to_element_with_offset(canvas, -150, 0).click_and_hold() \
        .move_by_offset(200, 60).release().perform()  # box zoom (the active drag tool)
    zoomed = page.wait(lambda: (lambda r: r if r[1] - r[0] < 0.6 * (rng[1] - rng[0]) else None)(
        page.d.execute_script("const r = Bokeh.documents[0].get_model_by_name('spectrum').x_range;"
                              "return [r.start, r.end];")), what="the box zoom")
    assert rng[0] < zoomed[0] < zoomed[1] < rng[1]
    # smoothing keeps the pixel count and lowers the scatter of the shown flux
    get = "return Array.from(Bokeh.documents[0].get_model_by_name('spectrum_data').data.flux).filter(Number.isFinite);"
    raw = page.d.execute_script(get)
    spin = [e for e in page.find("input") if e.get_attribute("value") == "0"][0]
    spin.clear()
    spin.send_keys("9\n")
    smooth = page.wait(lambda: (lambda f: f if f != raw else None)(page.d.execute_script(get)), what="smoothing")
    rough = lambda f: sum(abs(a - b) for a, b in zip(f[1:], f[:-1]))  # noqa: E731
    assert len(smooth) == len(raw) and rough(smooth) < 0.5 * rough(raw)
    # mark the first spectrum QSO, the second STAR (vertical button group on the right)
    marks = [b for b in page.find("button", "QSO") if b.location["x"] > 1000]
    marks[0].click()
    page.wait(lambda: page.table_rows()[0][-1] == "QSO", what="the mark in the table")
    assert "marked QSO" in page.div("info")
    page.button("Next ▶").click()
    page.wait(lambda: "0907-52373-0419" not in page.div("info") and "marked –" in page.div("info"), what="Next")
    [b for b in page.find("button", "STAR") if b.location["x"] > 1000][0].click()
    page.wait(lambda: page.table_rows()[1][-1] == "STAR", what="the second mark")
    page.button("Export 2 marks (CSV)").click()
    out = page.downloads / "visual-marks.csv"
    page.wait(out.is_file, what="the download")
    rows = list(csv.DictReader(out.open()))
    assert [(r["name"], r["visual_class"]) for r in rows] == [
        ("0266-51602-0013", "QSO"), (page.table_rows()[1][1], "STAR")]
    assert rows[0]["predicted_class"] == "GALAXY" and rows[0]["pipeline_class"] == "GALAXY"
    assert "exported 2 mark(s)" in page.div("status")
