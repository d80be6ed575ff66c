"""Label simulated spectra the way SDSS labels real ones: by the pipeline emulator.

The simulator builds a spectrum of a chosen *construction* (a star template, a galaxy
with BPT line ratios, a quasar), but the labels a network learns from real data are the
SDSS pipeline's decision on the spectrum as observed: a quasar whose host galaxy dominates
may be CLASS GALAXY; an AGN whose lines are broader than 200 km/s gets SUBCLASS 'AGN
BROADLINE' (seed4: GALAXY); an AGN whose lines are too weak for the 3-sigma BPT rule gets
no AGN subclass. :func:`relabel` runs :mod:`specclass.spectro1d` on every simulated
spectrum and takes CLASS / SUBCLASS / Z from it; the construction stays in the columns
``sim_class``, ``sim_subclass`` and ``sim_z``.

The emulator takes ~0.05-0.2 s per spectrum, so results are cached on disk, keyed by the
sha256 of the grid, flux and ivar bytes and the emulator version
(``$SPECCLASS_CACHE`` or ``~/.cache/specclass``, folder ``spectro1d-labels``), and spread
over ``workers`` processes.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

#: Bumped whenever the emulator's decision changes, so stale cached labels are not reused.
EMULATOR_VERSION = "spectro1d-4"


def cache_dir() -> Path:
    """``$SPECCLASS_CACHE/spectro1d-labels`` (default ``~/.cache/specclass/spectro1d-labels``)."""
    root = os.environ.get("SPECCLASS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "specclass")
    return Path(root) / "spectro1d-labels"


def label_prepared(objects: Any, generation: Any, lines: bool) -> dict[str, np.ndarray]:
    """The emulator's labels of spectra already through :func:`specclass.spectro1d.zscan.prepare`.

    Args:
        objects: ``N`` :class:`~specclass.spectro1d.zscan.ObjectSpectrum` (any iterable).
        generation: ``(N,)`` template generation per spectrum ('sdss' or 'boss').
        lines: also fit the lines (SUBCLASS).

    Returns:
        ``class``, ``subclass`` (``(N,)`` str; '' where nothing could be fitted: no data gives no
        label, not the pipeline's placeholder GALAXY), ``z``, ``rchi2diff`` (float64) and
        ``zwarning`` (int32).
    """
    from specclass.spectro1d import classify_prepared

    rows = [classify_prepared(obj, str(g), lines=lines) for obj, g in zip(objects, generation)]
    return {
        "class": np.array([r.class_ if r.fitted else "" for r in rows], dtype=str),
        "subclass": np.array([r.subclass if r.fitted else "" for r in rows], dtype=str),
        "z": np.array([r.z for r in rows], dtype=np.float64),
        "rchi2diff": np.array([r.rchi2diff for r in rows], dtype=np.float64),
        "zwarning": np.array([r.zwarning for r in rows], dtype=np.int32),
    }


def _label_block(args: tuple[np.ndarray, np.ndarray, np.ndarray, bool, np.ndarray]) -> dict[str, np.ndarray]:
    from specclass.spectro1d.zscan import prepare

    loglam, flux, ivar, lines, generation = args
    return label_prepared((prepare(loglam, flux[i], ivar[i]) for i in range(flux.shape[0])), generation, lines)


def pipeline_labels(
    loglam: np.ndarray, flux: np.ndarray, ivar: np.ndarray, lines: bool = True, workers: int | None = None,
    use_cache: bool = True, generation: np.ndarray | list[str] | str = "sdss",
) -> dict[str, np.ndarray]:
    """The emulated pipeline decision for every row.

    Args:
        loglam: ``(L,)`` grid, log10 vacuum Å in 1e-4 dex steps.
        flux, ivar: ``(N, L)`` float32.
        lines: fit emission lines (needed for the seed4 AGN subclass; class3 needs only CLASS).
        workers: processes (default: the CPUs this process may use, at most 8).
        use_cache: read/write the on-disk cache (:func:`cache_dir`).
        generation: the template generation, 'sdss' or 'boss', for all rows or ``(N,)`` one per
            row (real spectra: :func:`generations` from their RUN2D / survey, as the pipeline
            used the templates of its own reduction). Simulated spectra are built from SDSS-I/II
            templates: 'sdss'.

    Returns:
        ``{'class', 'subclass'}`` ``(N,)`` str, ``{'z', 'rchi2diff'}`` ``(N,)`` float64,
        ``'zwarning'`` ``(N,)`` int32 (emulated bits); class '' where no fit was possible.
    """
    flux = np.ascontiguousarray(flux, dtype=np.float32)
    ivar = np.ascontiguousarray(ivar, dtype=np.float32)
    loglam = np.asarray(loglam, dtype=np.float64)
    n = flux.shape[0]
    gen = np.full(n, generation, dtype="U4") if isinstance(generation, str) else np.asarray(generation, dtype="U4")
    if gen.shape != (n,) or not np.isin(gen, ("sdss", "boss")).all():
        raise ValueError(f"generation must be 'sdss', 'boss' or {n} of them, one per row")
    h = hashlib.sha256()
    for a in (loglam, flux, ivar):
        h.update(a.tobytes())
    h.update(f"{EMULATOR_VERSION}:lines={lines}".encode())
    if (gen != "sdss").any():  # keeps the keys of all-'sdss' (simulated) sets as they were
        h.update(gen.tobytes())
    path = cache_dir() / f"{h.hexdigest()}.npz"
    if use_cache and path.exists():
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    blocks = np.array_split(np.arange(n), max(1, min(n, workers * 4)))
    jobs = [(loglam, flux[b], ivar[b], lines, gen[b]) for b in blocks if b.size]
    if workers > 1 and n > 8:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            parts = list(ex.map(_label_block, jobs))
    else:
        parts = [_label_block(j) for j in jobs]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else _label_block((loglam, flux, ivar, lines, gen))
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **out)
        os.replace(tmp, path)
    return out


def generations(meta: dict[str, Any], n: int) -> np.ndarray:
    """``(n,)`` template generation per row of a dataset's ``meta`` (its 'run2d' and 'survey'
    columns, :func:`specclass.spectro1d.templates.generation_of`); 'sdss' where neither is known."""
    from specclass.spectro1d.templates import generation_of

    run2d = meta.get("run2d", [""] * n)
    survey = meta.get("survey", [""] * n)
    return np.array([generation_of(str(r), str(s)) for r, s in zip(run2d, survey)], dtype="U4")


def label_indices(lab: dict[str, np.ndarray], scheme_name: str, class_names: list[str]) -> np.ndarray:
    """``(N,)`` int64 index into ``class_names`` of the label each emulated (CLASS, SUBCLASS) gets under
    the scheme; -1 where the emulator found no fit or the scheme gives no label in ``class_names``."""
    from specclass.spectra.labels import get_scheme

    scheme = get_scheme(scheme_name)
    out = np.full(len(lab["class"]), -1, np.int64)
    for i, (c, s) in enumerate(zip(lab["class"], lab["subclass"])):
        name = scheme(c, s)[0] if c else None
        if name in class_names:
            out[i] = class_names.index(name)
    return out


def relabel(ds, workers: int | None = None, use_cache: bool = True):
    """A copy of a simulated dataset labelled by the emulated pipeline.

    Args:
        ds: :class:`~specclass.spectra.dataset.SpectralDataset` from the simulator (its
            ``attrs['label_scheme']`` names the scheme: 'seed4' or 'class3').
        workers, use_cache: as :func:`pipeline_labels`.

    Returns:
        A new dataset: ``meta['class'/'subclass'/'z']`` from the emulator, the construction
        in ``sim_class``/``sim_subclass``/``sim_z``, ``meta['zwarning']`` the emulated bits,
        ``labels`` from the scheme; rows the scheme cannot label (the emulator found no
        fit, or e.g. a STAR with SUBCLASS 'AGN') are dropped and counted in
        ``attrs['simulation']['pipeline_labels']``, with the construction -> label table.

    Raises:
        ValueError: the dataset has no ``label_scheme`` attribute.
    """
    from specclass.spectra.dataset import SpectralDataset
    from specclass.spectra.labels import get_scheme

    scheme_name = ds.attrs.get("label_scheme")
    if not scheme_name:
        raise ValueError("dataset has no 'label_scheme' attribute: cannot relabel")
    get_scheme(scheme_name)  # an unknown scheme fails here, before the emulator runs
    lab = pipeline_labels(ds.loglam, ds.flux, ds.ivar, lines=scheme_name != "class3", workers=workers,
                          use_cache=use_cache)
    class_names = list(ds.class_names)
    new = label_indices(lab, scheme_name, class_names)
    keep = new >= 0
    built = [class_names[j] for j in np.asarray(ds.labels)]
    table: dict[str, dict[str, int]] = {}
    for b, n_ in zip(built, new):
        row = table.setdefault(b, {})
        key = class_names[n_] if n_ >= 0 else "(no label)"
        row[key] = row.get(key, 0) + 1
    meta = {k: np.asarray(v).copy() for k, v in ds.meta.items()}
    meta["sim_class"] = np.asarray(meta["class"]).astype(str)
    meta["sim_subclass"] = np.asarray(meta["subclass"]).astype(str)
    meta["sim_z"] = np.asarray(meta["z"], dtype=np.float32)
    meta["class"], meta["subclass"] = lab["class"], lab["subclass"]
    meta["z"] = lab["z"].astype(np.float32)
    meta["zwarning"] = lab["zwarning"].astype(np.int32)
    attrs = dict(ds.attrs)
    sim = dict(attrs.get("simulation", {}))
    sim["pipeline_labels"] = {
        "method": "specclass.spectro1d (emulated idlspec2d spreduce1d CLASS/SUBCLASS), templates 'sdss' (-53724)",
        "emulator_version": EMULATOR_VERSION,
        "construction_to_label": table,
        "dropped_without_label": int((~keep).sum()),
    }
    attrs["simulation"] = sim
    labels = new[keep].astype(np.int32)
    attrs["build_report"] = {"n": int(keep.sum()),
                             "per_class": {c: int((labels == j).sum()) for j, c in enumerate(class_names)}}
    return SpectralDataset(
        flux=ds.flux[keep], ivar=ds.ivar[keep], labels=labels, class_names=class_names,
        loglam=ds.loglam, meta={k: np.asarray(v)[keep] for k, v in meta.items()}, attrs=attrs,
    )


def label_like_the_pipeline(ds, cfg, workers: int | None = None):
    """:func:`relabel` a fresh simulation, then top up rarely given labels.

    Labels the emulated pipeline rarely gives (seed4 AGN: many built AGN have lines too weak
    for the 3-sigma BPT rule or broader than 200 km/s) are topped up, in up to 3 rounds, with
    more spectra of the construction that yields them most often (seeds ``cfg.seed + 7919 k``),
    until each label has at least 80 % of ``cfg.n_per_class``.

    Args:
        ds: :meth:`specclass.simulate.simulator.Simulator.run` output for ``cfg``.
        cfg: its :class:`~specclass.simulate.simulator.SimulationConfig`.
        workers: processes for the emulator.

    Returns:
        The relabelled dataset (``attrs['simulation']['pipeline_labels']['topped_up']`` counts
        the added rows).
    """
    from dataclasses import asdict

    from specclass.simulate.simulator import SimulationConfig, Simulator
    from specclass.spectra.dataset import SpectralDataset

    new = relabel(ds, workers=workers)
    # top up labels the pipeline rarely gives (seed4 AGN: most built AGN have lines too weak
    # for the 3-sigma BPT rule or broader than 200 km/s) with more of the construction that
    # yields them most, so that every label has about cfg.n_per_class spectra
    names = list(new.class_names)
    for round_ in range(1, 4):
        table = new.attrs["simulation"]["pipeline_labels"]["construction_to_label"]
        have = np.bincount(np.asarray(new.labels), minlength=len(names))
        short = [c for j, c in enumerate(names) if have[j] < 0.8 * cfg.n_per_class]
        if not short:
            break
        extra = []
        for c in short:
            src = max(table, key=lambda k: table[k].get(c, 0) / max(sum(table[k].values()), 1))
            rate = table[src].get(c, 0) / max(sum(table[src].values()), 1)
            if rate <= 0:
                continue
            need = int(np.ceil((cfg.n_per_class - have[names.index(c)]) / rate * 1.1))
            counts = {k: 0 for k in ("AGN", "GALAXY", "QSO", "STAR")}
            counts[src] = min(need, 20 * cfg.n_per_class)
            top_cfg = SimulationConfig(**{**asdict(cfg), "seed": cfg.seed + 7919 * round_, "construction_counts": counts})
            more = relabel(Simulator(top_cfg).run(), workers=workers)
            rows = np.flatnonzero(np.asarray(more.labels) == names.index(c))[: cfg.n_per_class - have[names.index(c)]]
            if rows.size:
                extra.append(more.subset(rows))
        if not extra:
            break
        attrs = new.attrs
        new = SpectralDataset.concatenate([new, *extra], class_names=names)
        attrs["simulation"]["pipeline_labels"]["topped_up"] = attrs["simulation"]["pipeline_labels"].get("topped_up", 0) + sum(len(e) for e in extra)
        labels_now = np.asarray(new.labels)
        attrs["build_report"] = {"n": len(new), "per_class": {c: int((labels_now == j).sum()) for j, c in enumerate(names)}}
        new.attrs = attrs
    return new
