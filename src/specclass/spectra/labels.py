"""Label schemes: pipeline ``CLASS``/``SUBCLASS`` -> the class a model learns.

A scheme maps one spectrum's ``(class, subclass)`` to a class name, or to
``None`` with the reason it has no label. Values are normalised first
(:func:`normalize`: bytes decoded as ASCII/UTF-8, whitespace stripped,
upper-cased), which is also what SkyServer's SQL does when it compares strings
(SQL Server's default collation is case-insensitive and ignores trailing blanks).

Schemes (``get_scheme(name)``):

``seed4`` - the seed tutorial's four classes, from its four SkyServer queries::

    STAR:   WHERE class = 'STAR'
    GALAXY: WHERE class = 'GALAXY' AND subClass != 'AGN'
    QSO:    WHERE class = 'QSO'    AND subClass != 'AGN'
    AGN:    WHERE subClass = 'AGN'

    The comparisons are exact string matches, so:

    * AGN is SUBCLASS exactly ``'AGN'`` - ``'AGN BROADLINE'`` is *not* AGN: a
      GALAXY with it stays GALAXY and a QSO with it stays QSO (SDSS appends
      ``BROADLINE`` when lines are broader than 200 km/s);
    * a QSO with SUBCLASS ``'AGN'`` is AGN (the QSO query excludes it, the AGN
      query has no class condition);
    * an empty SUBCLASS is ``!= 'AGN'`` (SkyServer stores '' not NULL), so a
      GALAXY/QSO without a subclass keeps its class;
    * a STAR with SUBCLASS ``'AGN'`` would be returned by both the STAR and the
      AGN query; it gets no label (reason "ambiguous").

``class3`` - the pipeline CLASS itself: GALAXY, QSO, STAR.

``star_subclass`` - stars only, labelled with their SUBCLASS (the MK-like
spectral type the pipeline's best-fit template carries, e.g. 'A0', 'G2',
'K7', 'WD', 'CV'); non-stars and stars without a subclass get no label. Its
classes are the subclasses present in the data, sorted alphabetically.

Class names are always in a fixed, documented order: alphabetical
(``seed4``: AGN, GALAXY, QSO, STAR; ``class3``: GALAXY, QSO, STAR).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

#: Pipeline CLASS values a scheme accepts.
KNOWN_CLASSES = ("GALAXY", "QSO", "STAR")

#: Names accepted by :func:`get_scheme`.
SCHEME_NAMES = ("seed4", "class3", "star_subclass")


def normalize(value: Any) -> str:
    """Decode bytes (``numpy.bytes_`` too), strip blanks and NULs, upper-case; None -> ''."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        value = bytes(value).decode("utf-8", errors="replace")
    return str(value).replace("\x00", "").strip().upper()


@dataclass(frozen=True)
class LabelScheme:
    """Base class: ``scheme(class_, subclass) -> (label, reason)``.

    Attributes:
        name: scheme name ('seed4', ...).
        fixed_classes: the class names in order when the scheme fixes them, else
            ``None`` (the classes come from the data: :meth:`class_names_for`).
    """

    name: str
    fixed_classes: tuple[str, ...] | None

    def label(self, class_: str, subclass: str) -> tuple[str | None, str | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, class_: Any, subclass: Any = "") -> tuple[str | None, str | None]:
        """Label one spectrum.

        Args:
            class_: pipeline CLASS (str or bytes, any case/padding).
            subclass: pipeline SUBCLASS (str or bytes).

        Returns:
            ``(label, None)`` or ``(None, reason)``; ``reason`` is a short text
            such as ``"unknown CLASS 'UNKNOWN'"`` or ``"no CLASS"``.
        """
        c, s = normalize(class_), normalize(subclass)
        if not c:
            return None, "no CLASS"
        if c not in KNOWN_CLASSES:
            return None, f"unknown CLASS {c!r}"
        return self.label(c, s)

    def class_names_for(self, labels: Iterable[str]) -> list[str]:
        """Class names in the scheme's order for a set of labels seen in the data.

        Fixed schemes return their fixed list (also when a class is empty);
        otherwise the sorted distinct labels.

        Raises:
            ValueError: a label not in the fixed class list.
        """
        seen = sorted({str(x) for x in labels})
        if self.fixed_classes is None:
            return seen
        bad = [x for x in seen if x not in self.fixed_classes]
        if bad:
            raise ValueError(f"labels {bad} are not classes of scheme {self.name!r} ({list(self.fixed_classes)})")
        return list(self.fixed_classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (saved in dataset attrs)."""
        return {"name": self.name, "fixed_classes": list(self.fixed_classes) if self.fixed_classes else None}


class Seed4(LabelScheme):
    """The seed tutorial's AGN / GALAXY / QSO / STAR (see the module docstring for the SQL)."""

    def __init__(self) -> None:
        super().__init__("seed4", ("AGN", "GALAXY", "QSO", "STAR"))

    def label(self, class_: str, subclass: str) -> tuple[str | None, str | None]:
        if class_ == "STAR":
            if subclass == "AGN":
                return None, "ambiguous: CLASS 'STAR' with SUBCLASS 'AGN' matches both the STAR and the AGN query"
            return "STAR", None
        if subclass == "AGN":
            return "AGN", None
        return class_, None


class Class3(LabelScheme):
    """GALAXY / QSO / STAR: the pipeline CLASS."""

    def __init__(self) -> None:
        super().__init__("class3", ("GALAXY", "QSO", "STAR"))

    def label(self, class_: str, subclass: str) -> tuple[str | None, str | None]:
        return class_, None


class StarSubclass(LabelScheme):
    """Stars only, labelled by SUBCLASS; classes = subclasses present, sorted."""

    def __init__(self) -> None:
        super().__init__("star_subclass", None)

    def label(self, class_: str, subclass: str) -> tuple[str | None, str | None]:
        if class_ != "STAR":
            return None, f"not a star (CLASS {class_!r})"
        if not subclass:
            return None, "star without SUBCLASS"
        return subclass, None


_SCHEMES = {"seed4": Seed4, "class3": Class3, "star_subclass": StarSubclass}


def get_scheme(name: str | LabelScheme) -> LabelScheme:
    """The scheme called ``name`` (one of :data:`SCHEME_NAMES`), or ``name`` itself if it is a scheme.

    Raises:
        ValueError: unknown name (lists the allowed names).
    """
    if isinstance(name, LabelScheme):
        return name
    key = str(name).strip().lower()
    if key not in _SCHEMES:
        raise ValueError(f"unknown label scheme {name!r}; allowed: {', '.join(SCHEME_NAMES)}")
    return _SCHEMES[key]()


@dataclass
class LabelCheck:
    """What a labelling pass found, reported before anything trains.

    Attributes:
        class_names: classes in order.
        counts: ``{class: n}`` for every class (0 for empty ones).
        empty: classes with no spectrum.
        unlabelled: ``{reason: n}`` for spectra that got no label.
    """

    class_names: list[str]
    counts: dict[str, int]
    empty: list[str]
    unlabelled: dict[str, int]

    @property
    def ok(self) -> bool:
        """True when every class has at least one spectrum."""
        return not self.empty

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [f"{c:>16s} {self.counts[c]:8d}" for c in self.class_names]
        if self.empty:
            out.append(f"empty classes: {', '.join(self.empty)}")
        for reason, n in sorted(self.unlabelled.items(), key=lambda kv: -kv[1]):
            out.append(f"no label ({reason}): {n}")
        return out


def apply_scheme(
    scheme: str | LabelScheme, classes: Sequence[Any], subclasses: Sequence[Any]
) -> tuple[np.ndarray, list[str], list[str | None], LabelCheck]:
    """Label many spectra at once.

    Args:
        scheme: a scheme or its name.
        classes, subclasses: ``(N,)`` CLASS and SUBCLASS values (str or bytes).

    Returns:
        ``(labels, class_names, reasons, check)``: ``labels`` ``(N,)`` int32 index
        into ``class_names`` (-1 = no label), ``reasons[k]`` why row ``k`` has no
        label (None when it has one), and a :class:`LabelCheck`.

    Raises:
        ValueError: unknown scheme name, or ``classes``/``subclasses`` lengths differ.
    """
    sch = get_scheme(scheme)
    if len(classes) != len(subclasses):
        raise ValueError(f"{len(classes)} classes but {len(subclasses)} subclasses")
    names: list[str | None] = []
    reasons: list[str | None] = []
    for c, s in zip(classes, subclasses):
        lab, why = sch(c, s)
        names.append(lab)
        reasons.append(why)
    class_names = sch.class_names_for(n for n in names if n is not None)
    index = {c: i for i, c in enumerate(class_names)}
    labels = np.array([index[n] if n is not None else -1 for n in names], dtype=np.int32)
    check = check_labels(labels, class_names, reasons)
    return labels, class_names, reasons, check


def check_labels(labels: np.ndarray, class_names: Sequence[str], reasons: Iterable[str | None] = ()) -> LabelCheck:
    """Count spectra per class, list empty classes and tally the no-label reasons.

    Args:
        labels: ``(N,)`` int index into ``class_names`` (-1 = none).
        class_names: class names in order.
        reasons: optional per-row reasons (None for labelled rows).
    """
    labels = np.asarray(labels)
    counts = {c: int(np.count_nonzero(labels == i)) for i, c in enumerate(class_names)}
    unlabelled: dict[str, int] = {}
    for r in reasons:
        if r is not None:
            unlabelled[r] = unlabelled.get(r, 0) + 1
    return LabelCheck(list(class_names), counts, [c for c, n in counts.items() if n == 0], unlabelled)
