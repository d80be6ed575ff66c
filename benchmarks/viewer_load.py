"""Size and load time of a ``specclass view`` page in headless chromium (README's figure).

    python benchmarks/viewer_load.py viewer.html [--repeat 3] [--screenshot docs/viewer.png]

Load time: from navigation start until the page has drawn its first spectrum (the
count line is filled by the controller's start-up), read from ``performance.now()``
in the page; then the mean time to open a spectrum (:data:`OPEN`). Needs chromium, chromium-driver and selenium (the ``browser`` extra).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

READY = ("return (window.Bokeh && Bokeh.documents.length && "
         "Bokeh.documents[0].get_model_by_name('count').text) ? performance.now() : null;")
#: Select each of the first 50 spectra in turn (what a click on a table row or Next does:
#: decode, smooth, shade the masked pixels, place the lines); mean time per spectrum, in
#: ms, until the plot's data are set (bokeh draws them on the next animation frame).
OPEN = """
const doc = Bokeh.documents[0], rows = doc.get_model_by_name('rows'), info = doc.get_model_by_name('info');
const n = Math.min(50, rows.data.name.length), t0 = performance.now();
for (let i = n - 1; i >= 0; i--) rows.selected.indices = [i];
return [(performance.now() - t0) / n, info.text.includes(rows.data.name[0])];
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--screenshot", type=Path, help="also save a PNG of the page (1450 x 800)")
    args = ap.parse_args(argv)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1450,800"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
    loads, opens = [], []
    for k in range(args.repeat):
        d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        try:
            d.get(args.page.resolve().as_uri())
            t = None
            for _ in range(1200):
                t = d.execute_script(READY)
                if t:
                    break
                time.sleep(0.02)
            loads.append(t / 1000)
            ms, shown = d.execute_script(OPEN)
            assert shown, "selecting a spectrum did not show it"
            opens.append(ms)
            if args.screenshot and k == 0:
                time.sleep(0.5)
                d.save_screenshot(str(args.screenshot))
        finally:
            d.quit()
    size = args.page.stat().st_size / 1e6
    print(f"{args.page}: {size:.1f} MB; load until the first spectrum is drawn: median {statistics.median(loads):.2f} s "
          f"(runs: {', '.join(f'{x:.2f}' for x in loads)}); opening a spectrum: median {statistics.median(opens):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
