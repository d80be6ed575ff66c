"""Build the datasets the packaged pretrained classifiers are trained on (developers only).

All labelled real SDSS spectra of ``../shared/data/sdss`` (the FITS folders and the 963 text star
spectra, exactly the real set of ``benchmarks/accuracy.py``), with seed4 and class3 labels and
object-grouped splits (seed 42)::

    .venv/bin/python tools/pretrained_dataset.py build/pretrained-data
    .venv/bin/python tools/make_pretrained.py build/pretrained-data/seed4.h5 --scheme seed4 -- --quiet
    .venv/bin/python tools/make_pretrained.py build/pretrained-data/class3.h5 --scheme class3 -- --quiet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    from _results import shared_data_dir
    from accuracy import load_data

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder for seed4.h5 and class3.h5")
    p.add_argument("--shared-data", type=Path, default=shared_data_dir())
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for scheme in ("seed4", "class3"):
        real = load_data(args.shared_data, scheme, 0, 42, True)["real"]
        real.attrs["label_scheme"] = scheme
        real.attrs["description"] = f"all labelled real SDSS spectra of ../shared/data/sdss (FITS + text stars), {scheme}"
        print(f"{scheme}: {len(real)} spectra -> {real.save(args.out / f'{scheme}.h5')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
