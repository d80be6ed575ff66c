"""Train / validation / test splits: seeded, stratified by class, grouped by object.

Repeat observations of one object must never straddle splits, or a model is
tested on spectra it has (almost) seen. Two spectra belong to the same object
when

* they share ``PLATE-MJD-FIBERID`` (the same spectrum, e.g. a lite and a full
  file, or two reductions), or
* both have coordinates and lie within ``radius_arcsec`` (default 2") of each
  other - repeat epochs on other plates (78 of the spectra in sdss/spectra are
  epochs of the SDSS-RM quasar RM017).

Pairs are found with :func:`astropy.coordinates.search_around_sky` and joined
transitively with :func:`scipy.sparse.csgraph.connected_components` (a chain
of close pairs is one object). Each object gets ``object_id`` = the smallest
``PLATE-MJD-FIBERID`` key (or file name) among its spectra.

Splits use scikit-learn's :class:`~sklearn.model_selection.StratifiedGroupKFold`
(shuffled with the seed): of ``round(1 / test_frac)`` folds, the one whose size
is closest to ``test_frac`` of the rows becomes the test set, then likewise one
of ``round((1 - test_frac) / val_frac)`` folds of the rest becomes the
validation set. The fractions are therefore met to within a fold
and a group (groups are indivisible); with fewer groups than folds, each group
is a fold. ``meta['split']`` is 0 = train, 1 = val, 2 = test.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

from specclass.spectra.dataset import SPLIT_CODES, SpectralDataset

#: Default matching radius for repeat observations, arcsec.
DEFAULT_RADIUS_ARCSEC = 2.0


def object_keys(meta: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(N,)`` str: 'PLATE-MJD-FIBERID' (zero-padded) where all three are >= 0, else the
    file name (with ``#row<k>`` appended when ``meta['row']`` >= 0: one file, several spectra)."""
    plate = np.asarray(meta["plate"]).astype(np.int64)
    mjd = np.asarray(meta["mjd"]).astype(np.int64)
    fiber = np.asarray(meta["fiberid"]).astype(np.int64)
    files = np.asarray(meta["file"]).astype(str)
    rows = np.asarray(meta["row"]).astype(np.int64) if "row" in meta else np.full(files.shape, -1)
    keys = []
    for p, m, f, name, r in zip(plate, mjd, fiber, files, rows):
        if p >= 0 and m >= 0 and f >= 0:
            keys.append(f"{p:04d}-{m:05d}-{f:04d}")
        elif r >= 0:
            keys.append(f"{name}#row{r}")
        else:
            keys.append(name)
    return np.array(keys, dtype=str)


def assign_object_ids(meta: Mapping[str, np.ndarray], radius_arcsec: float = DEFAULT_RADIUS_ARCSEC) -> np.ndarray:
    """Group spectra into objects (same plate-mjd-fiber, or within ``radius_arcsec``).

    Args:
        meta: columns ``plate``, ``mjd``, ``fiberid``, ``file``, ``ra``, ``dec``
            (degrees; NaN = unknown), each ``(N,)``.
        radius_arcsec: matching radius; 0 disables position matching.

    Returns:
        ``(N,)`` str object ids (smallest key of each group).

    Raises:
        ValueError: ``radius_arcsec`` < 0.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if radius_arcsec < 0:
        raise ValueError(f"radius_arcsec must be >= 0, got {radius_arcsec}")
    keys = object_keys(meta)
    n = keys.shape[0]
    if n == 0:
        return keys
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    # same key -> link every row to the first row with that key
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rows.append(np.arange(n))
    cols.append(first[inverse.ravel()])
    ra = np.asarray(meta.get("ra", np.full(n, np.nan)), dtype=np.float64)
    dec = np.asarray(meta.get("dec", np.full(n, np.nan)), dtype=np.float64)
    has = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
    if radius_arcsec > 0 and has.size > 1:
        import astropy.units as u
        from astropy.coordinates import SkyCoord, search_around_sky

        c = SkyCoord(ra[has] * u.deg, dec[has] * u.deg)
        i1, i2, _, _ = search_around_sky(c, c, radius_arcsec * u.arcsec)
        rows.append(has[i1])
        cols.append(has[i2])
    r = np.concatenate(rows)
    cidx = np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, dtype=np.int8), (r, cidx)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # name each component after its smallest key
    order = np.lexsort((keys, comp))
    comp_sorted = comp[order]
    starts = np.flatnonzero(np.r_[True, comp_sorted[1:] != comp_sorted[:-1]])
    name_of = dict(zip(comp_sorted[starts].tolist(), keys[order][starts].tolist()))
    return np.array([name_of[c] for c in comp.tolist()], dtype=str)


def _one_fold(labels: np.ndarray, groups: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """Boolean mask of one StratifiedGroupKFold fold of about ``frac`` of the rows."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = np.unique(groups).size
    if frac <= 0 or n_groups < 2:
        return np.zeros(labels.shape[0], dtype=bool)
    n_splits = max(2, int(round(1.0 / frac)))
    n_splits = min(n_splits, n_groups)
    if n_splits > np.bincount(np.unique(labels, return_inverse=True)[1].ravel()).max():
        # every class is smaller than the number of folds: sklearn refuses to
        # stratify ("n_splits=k cannot be greater than the number of members in
        # each class"); take a grouped, unstratified share instead
        from sklearn.model_selection import GroupShuffleSplit

        n_take = min(n_groups - 1, max(1, int(round(frac * n_groups))))
        gss = GroupShuffleSplit(n_splits=1, test_size=n_take, random_state=seed)
        _, idx = next(gss.split(np.zeros(labels.shape[0]), labels, groups))
        mask = np.zeros(labels.shape[0], dtype=bool)
        mask[idx] = True
        return mask
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has only k members" on small sets
        warnings.simplefilter("ignore", UserWarning)
        folds = [idx for _, idx in cv.split(np.zeros(labels.shape[0]), labels, groups)]
    # big groups (many epochs of one object) make folds uneven: take the fold
    # whose size is closest to the wanted fraction (first one on ties)
    target = frac * labels.shape[0]
    best = min(range(len(folds)), key=lambda k: abs(folds[k].size - target))
    mask = np.zeros(labels.shape[0], dtype=bool)
    mask[folds[best]] = True
    return mask


def split_indices(
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    seed: int = 42,
) -> np.ndarray:
    """Assign rows to train (0), val (1), test (2), stratified by ``labels`` and grouped by ``groups``.

    Args:
        labels: ``(N,)`` int class index (stratification target).
        groups: ``(N,)`` object ids; rows sharing one are never split apart.
        val_frac, test_frac: wanted fractions of all rows (each in [0, 1),
            sum < 1); met to within one fold/group.
        seed: random seed (same inputs + seed -> same split).

    Returns:
        ``(N,)`` int8 split codes.

    Raises:
        ValueError: a fraction out of range, or lengths that differ.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    for name, v in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {v}")
    if val_frac + test_frac >= 1.0:
        raise ValueError(f"val_frac + test_frac must be < 1, got {val_frac} + {test_frac}")
    if labels.shape != groups.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and groups {groups.shape} must be (N,) and equal")
    out = np.zeros(labels.shape[0], dtype=np.int8)
    if labels.shape[0] == 0:
        return out
    # integer group codes (sklearn wants array-like groups; codes are stable)
    _, gcodes = np.unique(groups, return_inverse=True)
    gcodes = gcodes.ravel()
    test = _one_fold(labels, gcodes, test_frac, seed)
    out[test] = SPLIT_CODES["test"]
    rest = np.flatnonzero(~test)
    if rest.size and val_frac > 0:
        share = val_frac / (1.0 - test_frac)
        val = _one_fold(labels[rest], gcodes[rest], share, seed + 1)
        out[rest[val]] = SPLIT_CODES["val"]
    return out


def assign_splits(
    dataset: SpectralDataset,
    *,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    seed: int = 42,
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
) -> SpectralDataset:
    """Write ``meta['object_id']`` and ``meta['split']`` of ``dataset`` (in place) and record the settings.

    ``dataset.attrs['split']`` gets ``{seed, val_frac, test_frac, radius_arcsec,
    method, counts}``.

    Returns:
        ``dataset`` (for chaining).
    """
    ids = assign_object_ids(dataset.meta, radius_arcsec)
    dataset.meta["object_id"] = ids
    codes = split_indices(dataset.labels, ids, val_frac=val_frac, test_frac=test_frac, seed=seed)
    dataset.meta["split"] = codes
    dataset.attrs["split"] = split_summary(dataset, seed=seed, val_frac=val_frac, test_frac=test_frac, radius_arcsec=radius_arcsec)
    return dataset


def split_summary(dataset: SpectralDataset, **settings: Any) -> dict[str, Any]:
    """Settings plus ``counts[split][class]`` and the number of objects per split."""
    counts: dict[str, dict[str, int]] = {}
    objects: dict[str, int] = {}
    for name, code in SPLIT_CODES.items():
        sel = dataset.meta["split"] == code
        counts[name] = {c: int(np.count_nonzero(sel & (dataset.labels == i))) for i, c in enumerate(dataset.class_names)}
        objects[name] = int(np.unique(dataset.meta["object_id"][sel]).size)
    return {
        "method": "sklearn StratifiedGroupKFold, groups = object_id",
        **settings,
        "counts": counts,
        "objects": objects,
    }


def check_no_leak(dataset: SpectralDataset) -> list[str]:
    """Object ids found in more than one split (empty list = no leak)."""
    ids = dataset.meta["object_id"]
    split = dataset.meta["split"]
    leaks = []
    for oid in np.unique(ids):
        if np.unique(split[ids == oid]).size > 1:
            leaks.append(str(oid))
    return leaks
