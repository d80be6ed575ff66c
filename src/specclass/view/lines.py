"""Spectral lines the viewer marks: rest wavelengths in vacuum Å, emission and absorption.

Sources:

* narrow emission lines: the simulator's SDSS list
  (:data:`specclass.simulate.lines.LINES_VACUUM`, idlspec2d ``etc/emlines.par``);
* broad quasar lines (Lyα, N V, C IV, C III], Mg II): laboratory vacuum
  wavelengths of Vanden Berk et al. 2001, AJ 122, 549, table 2;
* stellar / galaxy absorption (Ca II K and H, G band, Mg I b, Na I D, Ca II
  triplet): air wavelengths of Moore 1945 (*A Multiplet Table of Astrophysical
  Interest*, as tabulated by NIST ASD), converted to vacuum with
  :func:`specclass.simulate.lines.air_to_vacuum` (Ciddor 1996).

A line is drawn at ``rest * (1 + z)``; the page does that in the browser, so a
typed redshift moves the markers without rebuilding the page.
"""

from __future__ import annotations

from typing import NamedTuple

from specclass.simulate.lines import LINES_VACUUM, LYA_VACUUM, air_to_vacuum


class Line(NamedTuple):
    """One marked line: label, rest vacuum wavelength (Å), ``'emission'`` or ``'absorption'``."""

    name: str
    rest: float
    kind: str


#: Labels shown for :data:`specclass.simulate.lines.LINES_VACUUM` keys (doublets share one).
_NARROW_LABELS = {
    "OII_3727": "[O II]", "NeIII_3870": "[Ne III]", "Hdelta": "Hδ", "Hgamma": "Hγ", "Hbeta": "Hβ",
    "OIII_4960": "[O III]", "OIII_5008": "[O III]", "OI_6302": "[O I]", "NII_6550": "[N II]",
    "Halpha": "Hα", "NII_6585": "[N II]", "SII_6718": "[S II]",
}

#: Broad quasar lines, vacuum Å (Vanden Berk et al. 2001, table 2).
_BROAD_VACUUM = {"Lyα": LYA_VACUUM, "N V": 1240.14, "C IV": 1549.06, "C III]": 1908.73, "Mg II": 2798.75}

#: Absorption lines, **air** Å (Moore 1945 via NIST ASD; the G band is the CH band at 4304.4 Å,
#: 4305.6 Å vacuum as in SDSS's line list; Mg I b and Na I D are drawn at their strongest / mean
#: component); converted to vacuum by :func:`default_lines`.
_ABSORPTION_AIR = (
    ("Ca II K", 3933.663), ("Ca II H", 3968.468), ("G band", 4304.4), ("Mg I b", 5183.604),
    ("Na I D", (5889.951 + 5895.924) / 2), ("Ca II", 8498.02), ("Ca II", 8542.09), ("Ca II", 8662.14),
)


def default_lines() -> list[Line]:
    """The lines the viewer marks, sorted by rest wavelength.

    Returns:
        list of :class:`Line`; rest wavelengths in vacuum Å (float).
    """
    out = [Line(label, float(LINES_VACUUM[key]), "emission") for key, label in _NARROW_LABELS.items()]
    out += [Line(name, float(w), "emission") for name, w in _BROAD_VACUUM.items()]
    out += [Line(name, float(air_to_vacuum(w)), "absorption") for name, w in _ABSORPTION_AIR]
    return sorted(out, key=lambda line: line.rest)
