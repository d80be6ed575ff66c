"""Label schemes: seed4 SQL semantics, class3, star_subclass, normalisation and checks."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from specclass.spectra.labels import apply_scheme, check_labels, get_scheme, normalize


def test_normalize_bytes_and_padding():
    assert normalize(b"GALAXY  ") == "GALAXY"
    assert normalize(np.bytes_(b"qso\x00")) == "QSO"
    assert normalize("  agn broadline ") == "AGN BROADLINE"
    assert normalize(None) == ""


@pytest.mark.parametrize(
    "cls, sub, want",
    [
        ("STAR", "K7", "STAR"),
        ("GALAXY", "STARFORMING", "GALAXY"),
        ("GALAXY", "", "GALAXY"),
        ("GALAXY", "AGN", "AGN"),
        ("GALAXY", "AGN BROADLINE", "GALAXY"),  # exact match in the SQL: not AGN
        ("QSO", "BROADLINE", "QSO"),
        ("QSO", "AGN", "AGN"),  # excluded from the QSO query, selected by the AGN one
        ("QSO", "AGN BROADLINE", "QSO"),
        (b"galaxy ", b"agn", "AGN"),  # bytes, case and padding as SkyServer compares them
    ],
)
def test_seed4_sql_semantics(cls, sub, want):
    label, reason = get_scheme("seed4")(cls, sub)
    assert label == want and reason is None


def test_seed4_rejections_and_order():
    s = get_scheme("seed4")
    assert s.fixed_classes == ("AGN", "GALAXY", "QSO", "STAR")
    assert s("STAR", "AGN")[0] is None and "ambiguous" in s("STAR", "AGN")[1]
    assert s("", "")[1] == "no CLASS"
    assert s("UNKNOWN", "")[1] == "unknown CLASS 'UNKNOWN'"


def test_class3_and_star_subclass():
    c3 = get_scheme("class3")
    assert c3.fixed_classes == ("GALAXY", "QSO", "STAR")
    assert c3("GALAXY", "AGN") == ("GALAXY", None)
    ss = get_scheme("star_subclass")
    assert ss("STAR", "k7 ") == ("K7", None)
    assert ss("GALAXY", "AGN")[0] is None and "not a star" in ss("GALAXY", "AGN")[1]
    assert ss("STAR", "")[1] == "star without SUBCLASS"
    assert ss.class_names_for(["K7", "A0", "K7", "G2"]) == ["A0", "G2", "K7"]


def test_unknown_scheme_lists_allowed():
    with pytest.raises(ValueError, match="unknown label scheme 'seed5'; allowed: seed4, class3, star_subclass"):
        get_scheme("seed5")


def test_apply_scheme_reports_empty_classes_and_reasons():
    labels, names, reasons, check = apply_scheme("seed4", ["STAR", "QSO", "GALAXY", "UNKNOWN"], ["G2", "", "AGN", ""])
    assert names == ["AGN", "GALAXY", "QSO", "STAR"]
    assert labels.tolist() == [3, 2, 0, -1]
    assert reasons[3] == "unknown CLASS 'UNKNOWN'"
    assert check.empty == ["GALAXY"] and not check.ok
    assert check.unlabelled == {"unknown CLASS 'UNKNOWN'": 1}
    assert any("empty classes: GALAXY" in line for line in check.lines())
    with pytest.raises(ValueError, match="classes"):
        get_scheme("class3").class_names_for(["AGN"])


def test_real_files_labels(sdss_dir):
    """Every spec file in sdss/spectra gets a seed4 label from its HDU 2 CLASS/SUBCLASS."""
    from specclass.io import read_spectrum

    metas = [read_spectrum(p).meta for p in sorted((sdss_dir / "spectra").glob("*.fits"))]
    labels, names, reasons, check = apply_scheme("seed4", [m.class_ for m in metas], [m.subclass for m in metas])
    assert (labels >= 0).all(), [r for r in reasons if r]
    # catalogue: 2 exact 'AGN' subclasses among the galaxies; 'AGN BROADLINE' stays GALAXY
    assert check.counts["AGN"] == 2
    assert check.counts["STAR"] == 2
    assert check.counts["QSO"] >= 78
    broad = [k for k, m in enumerate(metas) if m.subclass == "AGN BROADLINE"]
    assert broad and all(names[labels[k]] == metas[k].class_ for k in broad)  # GALAXY or QSO, never AGN
    assert sum(check_labels(labels, names).counts.values()) == len(metas)


def test_byte_labels_from_a_real_hdu(sdss_dir):
    """CLASS/SUBCLASS as raw fixed-width FITS bytes (blank/NUL padded) label the same as clean strings."""
    path = sdss_dir / "spectra" / "spec-0295-51585-0596.fits"
    with fits.open(path) as h:
        row = h[2].data[0]
        cls_b = str(row["CLASS"]).encode().ljust(6) + b"\x00"
        sub_b = str(row["SUBCLASS"]).encode().ljust(21)
    assert isinstance(cls_b, bytes)
    assert get_scheme("seed4")(cls_b, sub_b) == ("AGN", None)  # GALAXY / 'AGN'
    assert get_scheme("class3")(cls_b, sub_b) == ("GALAXY", None)
