"""Accuracy benchmark: the tutorial network vs the specclass default, trained in the same run.

For each label scheme (seed4, class3) and each data selection (all spectra; only
``ZWARNING == 0``), both networks (``spectral_tutorial`` and ``spectral_resnet``) are
trained on the same training rows, first on real spectra only, then on real + simulated
spectra (``specclass.simulate``), with the same epochs, batch size, seed, class weights
and augmentation (``specclass.training.train``; the best epoch is chosen by balanced
accuracy on the validation rows: the real validation split, plus the simulated one for
real + simulated). Each trained model is evaluated on

* the real test split (grouped by object, stratified; built by
  ``specclass.spectra.build.build_dataset``), broken down by source (FITS vs text),
  and its FITS rows alone (per-class recall on real FITS spectra);
* the LAMOST stars in ``../shared/data/other_surveys/lamost`` (an independent survey);
* the simulated test split (real + simulated runs only; a sanity figure).

Reported: balanced accuracy (mean per-class recall), plain accuracy, per-class recall with
counts (classes with fewer than 20 test spectra are marked ``*``), accuracy by source.
Outputs ``benchmarks/results/accuracy.json`` and ``benchmarks/results/accuracy.md``.

Real data: the FITS spectra of ``../shared/data/sdss`` (``spectra/``, ``spectra2/``,
``spectra3/``, ``dr7/``, ``other_layouts/``; sky fibres and the byte-identical ``full/``
copies are left out) and, unless ``--no-text-stars``, the 963 flux-only SDSS star
spectra of ``sdss/arrays/sdss_star_spectra_txt.npz`` (source 'text', ivar = 1 where
the flux is finite, as the text reader does).

Run outside CI. With the defaults (16 trainings of 8 epochs, 300 simulated spectra per
class) it should take about 30 min on 2 busy CPU cores (estimated from the smoke test,
which took 130 s)::

    .venv/bin/python benchmarks/accuracy.py
    .venv/bin/python benchmarks/accuracy.py --quick      # smoke test, ~2 min
    .venv/bin/python benchmarks/accuracy.py --evaluate-only   # re-evaluate the last run's models

``--folds K`` adds a K-fold cross-validation (grouped by object, stratified by class) over
*all* real spectra: each fold's model is trained on the other folds (+ the simulated
training spectra) and predicts its own fold, so every real spectrum gets one
out-of-fold prediction (266 real FITS spectra instead of the 31 of the single test
split), and the LAMOST stars are scored by each fold's model (pooled).

``--members K`` (with ``--folds``) trains K members per fold with training seeds ``--seed`` ...
``--seed + K - 1`` on the same rows and adds a row for their ensemble (combined as
``specclass.ensemble`` does); ``--reuse`` loads run folders an earlier run finished, so members can be
added to an earlier cross-validation without training it again.

With ``--folds``, every scheme with GALAXY and QSO or AGN gets a row ``<model> + SDSS pipeline
rule``: the same out-of-fold probabilities after :func:`specclass.pipeline_rule.apply_pipeline_rule`
(GALAXY vs QSO decided by the GALAXY/QSO eigenspectrum fits, AGN vs GALAXY by the measured
emission lines), which is what ``specclass predict`` and ``evaluate`` give by default; seed4 also
gets ``<model> + SDSS line rule`` (the line step alone, the default of the previous release).
``--no-pipeline-rule`` leaves both rows out.

``--save-bundle FILE`` writes the built real and LAMOST datasets of every scheme to one
compressed npz (flux/ivar scaled per row and stored as float16, labels, splits, meta)
and ``--bundle FILE`` reads it instead of ``--shared-data``: how the same benchmark runs
on a machine that has this repository but not ``../shared`` (the simulated spectra are
made again there from the shipped templates, with the same seed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import environment, shared_data_dir, write_report

REPO = Path(__file__).resolve().parents[1]
MODELS = ("spectral_tutorial", "spectral_resnet")


# --------------------------------------------------------------------------- data
def concat(datasets: list, attrs: dict | None = None):
    """Row-wise concatenation of datasets on the same grid and class list (standard meta columns only)."""
    from specclass.spectra.dataset import META_COLUMNS, SpectralDataset

    first = datasets[0]
    for d in datasets[1:]:
        if d.class_names != first.class_names or not np.allclose(d.loglam, first.loglam):
            raise ValueError("datasets differ in class names or grid")
    return SpectralDataset(
        flux=np.concatenate([d.flux for d in datasets]),
        ivar=np.concatenate([d.ivar for d in datasets]),
        labels=np.concatenate([d.labels for d in datasets]),
        class_names=first.class_names,
        loglam=first.loglam,
        meta={k: np.concatenate([np.asarray(d.meta[k]) for d in datasets]) for k in META_COLUMNS},
        attrs=dict(attrs or first.attrs),
    )


def text_star_dataset(sdss: Path, scheme: str, seed: int):
    """The packed flux-only SDSS star spectra as a dataset (source 'text'), with grouped splits."""
    from specclass.spectra.dataset import SpectralDataset, empty_meta
    from specclass.spectra.grid import LogLamGrid, rebin_arrays
    from specclass.spectra.labels import get_scheme
    from specclass.spectra.splits import split_indices

    grid = LogLamGrid()
    sch = get_scheme(scheme)
    with np.load(sdss / "arrays" / "sdss_star_spectra_txt.npz", allow_pickle=False) as z:
        wave, flux, npix = z["wave"], z["flux"], z["npix"]
        plate, mjd, fiber, sub = z["plate"], z["mjd"], z["fiberid"], z["subclass"]
    n = len(npix)
    out_f = np.zeros((n, grid.npix), np.float32)
    out_i = np.zeros((n, grid.npix), np.float32)
    for i in range(n):
        w, f = wave[i, : npix[i]].astype(np.float64), flux[i, : npix[i]].astype(np.float64)
        iv = np.isfinite(f).astype(np.float64)
        out_f[i], out_i[i] = rebin_arrays(np.log10(w), np.nan_to_num(f), iv, grid=grid, name=f"text star row {i}")
    meta = empty_meta(n)
    meta.update(
        plate=plate.astype(np.int32), mjd=mjd.astype(np.int32), fiberid=fiber.astype(np.int32),
        subclass=sub.astype(str), source=np.full(n, "text"), format=np.full(n, "text"), survey=np.full(n, "sdss"),
    )
    meta["class"] = np.full(n, "STAR")
    meta["file"] = np.array([f"arrays/sdss_star_spectra_txt.npz[{i}]" for i in range(n)])
    meta["object_id"] = np.array([f"{p:04d}-{m:05d}-{f:04d}" for p, m, f in zip(plate, mjd, fiber)])
    names = list(sch.fixed_classes)
    labels = np.array([names.index(sch("STAR", s)[0]) for s in meta["subclass"]], np.int32)
    meta["split"] = split_indices(labels, meta["object_id"], seed=seed)
    return SpectralDataset(out_f, out_i, labels, names, grid.loglam, meta, {"label_scheme": scheme, "grid": grid.to_dict()})


def simulated_sets(n_sim: int, scheme: str, seed: int, sim_labels: str) -> dict[str, Any]:
    """``{train-set name: simulated dataset}`` for ``--sim-labels`` pipeline / construction / both."""
    from specclass.simulate import simulate

    if not n_sim:
        return {}
    sources = ["pipeline", "construction"] if sim_labels == "both" else [sim_labels]
    return {("real+sim" if src == "pipeline" else f"real+sim ({src} labels)"): simulate(n_sim, labels=scheme, seed=seed, label_source=src)
            for src in sources}


def emulator_proba(ds: Any, scheme: str) -> np.ndarray:
    """``(N, C)`` one-hot probabilities of the pipeline emulator's label for every row of ``ds``
    (run, like the pipeline rule, on each spectrum's own file -- native pixels, the pipeline's
    masks -- where it is on SDSS pixels, else on the gridded spectrum the networks see; with the
    template generation of each spectrum's own reduction; uniform where it gives no label)."""
    from specclass.pipeline_rule import fit_input
    from specclass.simulate.pipeline_labels import generations, label_indices, label_prepared, pipeline_labels

    gens = np.asarray(generations(ds.meta, len(ds)))
    native = _natives(ds)
    on_grid = np.array([s is None for s in native], bool)
    lab = {k: np.empty(len(ds), dtype=object) for k in ("class", "subclass")}
    lines = scheme != "class3"
    if on_grid.any():  # the grid rows through the cached, parallel labeller
        g = pipeline_labels(ds.loglam, ds.flux[on_grid], ds.ivar[on_grid], lines=lines, generation=gens[on_grid])
        lab["class"][on_grid], lab["subclass"][on_grid] = g["class"], g["subclass"]
    rows = np.flatnonzero(~on_grid)
    g = label_prepared((fit_input(ds.loglam, ds.flux[i], ds.ivar[i], native[i], str(gens[i])) for i in rows),
                       gens[rows], lines)
    lab["class"][rows], lab["subclass"][rows] = g["class"], g["subclass"]
    idx = label_indices(lab, scheme, list(ds.class_names))
    proba = np.full((len(ds), len(ds.class_names)), 1.0 / len(ds.class_names), np.float32)
    rows = np.flatnonzero(idx >= 0)
    proba[rows] = 0.0
    proba[rows, idx[rows]] = 1.0
    return proba


def load_data(shared: Path, scheme: str, n_sim: int, seed: int, text_stars: bool,
              bundle: dict[str, Any] | None = None, sim_labels: str = "pipeline") -> dict[str, Any]:
    """Real (FITS + text), LAMOST and simulated datasets for ``scheme`` (real and LAMOST
    from ``bundle`` when given, see :func:`read_bundle`)."""
    from specclass.spectra.build import build_dataset

    if bundle is not None:
        if scheme not in bundle:
            raise SystemExit(f"the bundle has no {scheme!r} datasets (it has {sorted(bundle)})")
        sims = simulated_sets(n_sim, scheme, seed, sim_labels)
        return {"real": bundle[scheme]["real"], "lamost": bundle[scheme]["lamost"], "sims": sims, "build_skipped": None}
    sdss = shared / "sdss"
    fits_dirs = [sdss / d for d in ("spectra", "spectra2", "spectra3", "dr7", "other_layouts")]
    real, report = build_dataset(fits_dirs, labels=scheme, seed=seed)
    parts = [real]
    if text_stars:
        parts.append(text_star_dataset(sdss, scheme, seed))
    real = concat(parts)
    lamost, _ = build_dataset([shared / "other_surveys" / "lamost"], labels=scheme, seed=seed)
    sims = simulated_sets(n_sim, scheme, seed, sim_labels)
    return {"real": real, "lamost": lamost, "sims": sims, "build_skipped": report.to_dict() if hasattr(report, "to_dict") else None}


# --------------------------------------------------------------------------- bundle
def _pack(prefix: str, ds: Any, out: dict[str, np.ndarray]) -> None:
    """Add ``ds`` to ``out`` under ``prefix/...``: flux and ivar scaled per row into float16."""
    from specclass.spectra.dataset import META_COLUMNS

    flux = np.nan_to_num(ds.flux.astype(np.float64))
    scale = np.max(np.abs(flux), axis=1)
    scale = np.where(scale > 0, scale, 1.0)
    out[f"{prefix}/flux"] = (flux / scale[:, None]).astype(np.float16)
    ivar = np.nan_to_num(ds.ivar.astype(np.float64))
    iscale = np.max(ivar, axis=1)
    iscale = np.where(iscale > 0, iscale, 1.0)
    out[f"{prefix}/ivar"] = (ivar / iscale[:, None]).astype(np.float16)
    out[f"{prefix}/scale"] = scale
    out[f"{prefix}/ivar_scale"] = iscale
    out[f"{prefix}/labels"] = ds.labels
    out[f"{prefix}/class_names"] = np.array(ds.class_names, dtype=str)
    out[f"{prefix}/loglam"] = ds.loglam
    for k in META_COLUMNS:
        v = np.asarray(ds.meta[k])
        out[f"{prefix}/meta/{k}"] = v.astype(str) if v.dtype.kind in "OU" else v
    out[f"{prefix}/attrs"] = np.array(json.dumps(ds.attrs, default=str))


def _unpack(prefix: str, z: Any) -> Any:
    from specclass.spectra.dataset import META_COLUMNS, SpectralDataset

    return SpectralDataset(
        flux=z[f"{prefix}/flux"].astype(np.float64) * z[f"{prefix}/scale"][:, None],
        ivar=z[f"{prefix}/ivar"].astype(np.float64) * z[f"{prefix}/ivar_scale"][:, None],
        labels=z[f"{prefix}/labels"],
        class_names=[str(c) for c in z[f"{prefix}/class_names"]],
        loglam=z[f"{prefix}/loglam"],
        meta={k: z[f"{prefix}/meta/{k}"] for k in META_COLUMNS},
        attrs=json.loads(str(z[f"{prefix}/attrs"])),
    )


def save_bundle(path: Path, shared: Path, schemes: list[str], seed: int, text_stars: bool) -> Path:
    """Build the real (FITS + text) and LAMOST datasets of each scheme and write them to ``path``
    (compressed npz; flux and ivar each scaled per row by their maximum and stored as float16, which keeps
    3 significant digits: far below the noise of any spectrum here)."""
    from specclass.atomic import atomic_path

    out: dict[str, np.ndarray] = {"format": np.array("specclass-accuracy-bundle/1")}
    for scheme in schemes:
        data = load_data(shared, scheme, 0, seed, text_stars)
        _pack(f"{scheme}/real", data["real"], out)
        _pack(f"{scheme}/lamost", data["lamost"], out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **out)
    return path


def read_bundle(path: Path) -> dict[str, dict[str, Any]]:
    """``{scheme: {"real": SpectralDataset, "lamost": SpectralDataset}}`` from :func:`save_bundle`'s file."""
    with np.load(path, allow_pickle=False) as z:
        if "format" not in z.files or str(z["format"]) != "specclass-accuracy-bundle/1":
            raise SystemExit(f"{path}: not an accuracy bundle (no format 'specclass-accuracy-bundle/1')")
        schemes = sorted({k.split("/")[0] for k in z.files if "/" in k})
        return {s: {"real": _unpack(f"{s}/real", z), "lamost": _unpack(f"{s}/lamost", z)} for s in schemes}


# --------------------------------------------------------------------------- run
def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures the tables show, from an ``evaluate_predictions`` dict."""
    counts = metrics["confusion_matrix"]["counts"]
    per_class = [
        {"name": c["name"], "recall": c["recall"], "correct": int(counts[i][i]), "support": c["support"], "small": c["small"]}
        for i, c in enumerate(metrics["per_class"])
    ]
    by_source = {k: {"n": v["n"], "accuracy": v["accuracy"]} for k, v in (metrics.get("by_source") or {}).items()}
    return {
        "n": metrics["n"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "accuracy": metrics["accuracy"],
        "per_class": per_class,
        "by_source": by_source,
        "confusion_matrix": counts,
    }


def _fit(args: argparse.Namespace, trainable: Any, model_name: str, run_dir: Path,
         model_options: dict[str, Any] | None = None, seed: int | None = None) -> tuple[Any, float]:
    """Train ``model_name`` on ``trainable`` (split 0 = train, 1 = val) into ``run_dir`` with training
    seed ``seed`` (default ``--seed``), or with ``--evaluate-only`` (or ``--reuse`` and a finished run
    there) load what an earlier run left there. Returns (result-like, seconds)."""
    from specclass.training import train

    if args.evaluate_only or (getattr(args, "reuse", False) and (run_dir / "model.keras").is_file()):
        from types import SimpleNamespace

        from specclass.persistence import load_run

        run = load_run(run_dir, compile=False)
        res = SimpleNamespace(model=run.model, preprocessor=run.preprocessor, best_epoch=run.config.get("best_epoch"))
        return res, float(run.config.get("train_seconds_this_session") or float("nan"))
    if run_dir.exists():  # this benchmark's own scratch folder: always train afresh
        shutil.rmtree(run_dir)
    t0 = time.time()
    res = train(
        trainable, model_name=model_name, out_dir=run_dir, epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed if seed is None else seed, class_weight="balanced",
        augment=not args.no_augment, monitor="val_balanced_accuracy", verbose=0, resume=False,
        model_options=model_options,
    )
    return res, time.time() - t0


def _proba(res: Any, ds: Any) -> np.ndarray:
    x = res.preprocessor.transform(ds.flux, ds.ivar)
    return np.asarray(res.model.predict(x, batch_size=256, verbose=0))


def _score(ds: Any, proba: np.ndarray) -> dict[str, Any]:
    from specclass.evaluation import evaluate_predictions

    return summarise(evaluate_predictions(ds.labels, proba, ds.class_names, ds.meta))


def cv_folds(ds: Any, k: int, seed: int) -> np.ndarray:
    """``(N,)`` int fold index in ``[0, k)`` per row: stratified by label, grouped by
    ``meta['object_id']`` (sklearn ``StratifiedGroupKFold``, shuffled with ``seed``)."""
    from sklearn.model_selection import StratifiedGroupKFold

    fold = np.full(len(ds), -1, dtype=np.int64)
    _, groups = np.unique(np.asarray(ds.meta["object_id"]).astype(str), return_inverse=True)
    sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, test_idx) in enumerate(sgkf.split(np.zeros(len(ds)), ds.labels, groups)):
        fold[test_idx] = i
    return fold


def cross_validate(args: argparse.Namespace, real: Any, lamost: Any, sim: Any, model_name: str, run_prefix: Path,
                   model_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``args.folds`` models, each on the other folds of ``real`` (+ the simulated train/val
    rows of ``sim`` when given; validation = a grouped 15 % of the training folds) and predict its own
    fold. With ``--members K`` each fold trains K members on the same rows with training seeds
    ``--seed`` ... ``--seed + K - 1`` (as ``specclass train --ensemble K``; member 0 is the single
    model, run folder ``PREFIX-foldF``, member m ``PREFIX-foldF-mM``). Returns ``{"oof": (N, C)
    out-of-fold probabilities of member 0, "lamost": (K, M, C) every fold model's LAMOST
    probabilities, "members": [(N, C), (K, M, C)] per member, "best_epoch": [K], "seconds":
    training seconds}``."""
    from specclass.spectra.splits import split_indices

    n_members = max(1, getattr(args, "members", 1))
    fold = cv_folds(real, args.folds, args.seed)
    oof = [np.zeros((len(real), len(real.class_names)), np.float32) for _ in range(n_members)]
    lam: list[list[np.ndarray]] = [[] for _ in range(n_members)]
    best, seconds = [], 0.0
    for k in range(args.folds):
        part = real.subset(np.flatnonzero(fold != k))
        part.meta["split"] = split_indices(part.labels, part.meta["object_id"], val_frac=0.15, test_frac=0.0,
                                           seed=args.seed + k)
        if sim is not None:
            part = concat([part, sim.subset(sim.meta["split"] != 2)])
        held_out = real.subset(np.flatnonzero(fold == k))
        for m in range(n_members):
            run_dir = Path(f"{run_prefix}-fold{k}" + (f"-m{m}" if m else ""))
            res, sec = _fit(args, part, model_name, run_dir, model_options, seed=args.seed + m)
            seconds += sec
            if m == 0:
                best.append(res.best_epoch)
            oof[m][fold == k] = _proba(res, held_out)
            if len(lamost):
                lam[m].append(_proba(res, lamost))
        print(f"  {Path(run_prefix).name} fold {k + 1}/{args.folds} done ({seconds:.0f} s training)", flush=True)
    empty = np.zeros((0, 0, len(real.class_names)), np.float32)
    members = [(oof[m], np.stack(lam[m]) if lam[m] else empty) for m in range(n_members)]
    return {"oof": oof[0], "lamost": members[0][1], "members": members, "best_epoch": best, "seconds": seconds}


def ensemble_of(members: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The members' out-of-fold and LAMOST probabilities combined as ``specclass.ensemble`` does
    (mean log-probability, :func:`specclass.ensemble.combine_probabilities`; raw softmax, i.e.
    ``--no-calibration``)."""
    from specclass.ensemble import combine_probabilities

    oof = combine_probabilities([m[0] for m in members])
    lam = members[0][1]
    if lam.size:
        lam = np.stack([combine_probabilities([m[1][k] for m in members]) for k in range(lam.shape[0])])
    return oof, lam


def cv_scores(real: Any, lamost: Any, oof: np.ndarray, lam: np.ndarray, folds: int) -> dict[str, Any]:
    """The cross-validation rows' ``eval``: ``oof`` ``(N, C)`` scored on all of ``real`` and on its
    FITS spectra, and ``lam`` ``(K, M, C)`` (every fold model's LAMOST probabilities, when any) on
    ``lamost`` repeated K times."""
    fits = np.asarray(real.meta["source"]) == "fits"
    out = {"real, out-of-fold": _score(real, oof), "real FITS, out-of-fold": _score(real.subset(fits), oof[fits])}
    if len(lam):
        out[f"LAMOST, {folds} fold models pooled"] = _score(concat([lamost] * len(lam)), lam.reshape(-1, lam.shape[-1]))
    return out


def rule_proba(ds: Any, proba: np.ndarray, templates: bool = True) -> np.ndarray:
    """``proba`` ``(N, C)`` (or ``(K, N, C)``, one per fold model) after the SDSS pipeline rule that
    ``specclass predict``/``evaluate`` apply by default (:func:`specclass.pipeline_rule.apply_pipeline_rule`,
    template generation per row as the emulator); ``templates=False``: the line step alone."""
    from specclass.pipeline_rule import apply_pipeline_rule
    from specclass.simulate.pipeline_labels import generations

    if proba.ndim == 3:  # (K, N, C); K = 0 when there are no LAMOST spectra
        return np.stack([rule_proba(ds, p, templates) for p in proba]) if len(proba) else proba
    return apply_pipeline_rule(proba, list(ds.class_names), ds.loglam, ds.flux, ds.ivar,
                               generations(ds.meta, len(ds)), templates=templates, native=_natives(ds)).proba


#: Native-pixel spectra per dataset (:func:`_natives`).
_NATIVE: dict[tuple, list] = {}
#: ``--rule-on-grid``: no native spectra (every fit on the gridded row).
_GRID_ONLY = False


def _natives(ds: Any) -> list:
    """:func:`specclass.pipeline_rule.native_spectra` of ``ds``, each file read once per dataset
    (the rule and the emulator row fit them where the files exist, as ``evaluate`` does)."""
    from specclass.pipeline_rule import native_spectra

    if _GRID_ONLY:
        return [None] * len(ds)
    files = ds.meta["file"] if "file" in ds.meta else []
    key = (id(ds), len(ds), str(files[0]) if len(files) else "")
    if key not in _NATIVE:
        _NATIVE[key] = native_spectra(ds.meta, len(ds))
    return _NATIVE[key]


def run_benchmark(args: argparse.Namespace, on_row: Any = None) -> dict[str, Any]:
    """Train and evaluate every combination; ``on_row(report_so_far)`` after each trained model
    (``main`` writes the partial tables then, so an interrupted run keeps what it measured)."""
    from specclass import line_subclass, pipeline_rule

    bundle = read_bundle(args.bundle) if args.bundle else None
    results: list[dict[str, Any]] = []
    t_start = time.time()
    for scheme in args.schemes:
        data = load_data(args.shared_data, scheme, args.n_sim_per_class, args.seed, not args.no_text_stars, bundle,
                         sim_labels=args.sim_labels)
        for selection in args.selections:
            real = data["real"]
            if selection == "zwarning0":
                real = real.subset(real.meta["zwarning"] == 0)
            test = real.split("test")
            train_sets = {"real": real} if "real" in args.train_sets else {}
            if "real+sim" in args.train_sets:
                for name, sim in data["sims"].items():
                    train_sets[name] = concat([real, sim])
            if args.emulator:
                # the non-ML anchor: the emulated SDSS pipeline on the same (gridded) spectra
                row = {"scheme": scheme, "selection": selection, "train": "(none: template fit)",
                       "model": "spectro1d emulator", "eval": {}}
                t0 = time.time()
                oof = emulator_proba(real, scheme)
                fits = np.asarray(real.meta["source"]) == "fits"
                key = "out-of-fold" if args.folds else "all"
                row["eval"][f"real, {key}"] = _score(real, oof)
                row["eval"][f"real FITS, {key}"] = _score(real.subset(fits), oof[fits])
                if len(data["lamost"]):
                    row["eval"]["LAMOST" if not args.folds else f"LAMOST, {args.folds} fold models pooled"] = _score(
                        data["lamost"], emulator_proba(data["lamost"], scheme))
                row["train_seconds"] = round(time.time() - t0, 1)
                results.append(row)
                if on_row is not None:
                    on_row(_report(args, results, t_start, complete=False))
            for train_name, ds in train_sets.items():
                for model_name in args.models:
                    tag = f"{scheme}-{selection}-{train_name}-{model_name}"
                    row = {"scheme": scheme, "selection": selection, "train": train_name, "model": model_name,
                           "eval": {}}
                    extra_rows: list[dict[str, Any]] = []
                    if args.folds:
                        # K-fold: every real spectrum is predicted once by the model that did not see it
                        cv = cross_validate(args, real, data["lamost"], data["sims"].get(train_name),
                                            model_name, args.work / tag.replace(" ", "_").replace("(", "").replace(")", ""))
                        row.update(folds=args.folds, n_train=int(len(real) * (args.folds - 1) / args.folds),
                                   train_seconds=round(cv["seconds"], 1), best_epoch=cv["best_epoch"])
                        row["eval"] = cv_scores(real, data["lamost"], cv["oof"], cv["lamost"], args.folds)
                        rules = [(True, "SDSS pipeline rule")] if pipeline_rule.applies(real.class_names) else []
                        if line_subclass.applies(real.class_names):
                            rules.append((False, "SDSS line rule"))
                        for templates, rule_name in rules if args.pipeline_rule else []:
                            # the default prediction (pipeline rule) and the line step alone, per training seed
                            for m, (m_oof, m_lam) in enumerate(cv["members"]):
                                name = f"{model_name}{f' seed {args.seed + m}' if m else ''} + {rule_name}"
                                extra_rows.append({**row, "model": name, "eval": cv_scores(
                                    real, data["lamost"], rule_proba(real, m_oof, templates),
                                    rule_proba(data["lamost"], m_lam, templates), args.folds)})
                        if len(cv["members"]) > 1:  # the same folds, K members per fold combined
                            e_oof, e_lam = ensemble_of(cv["members"])
                            extra_rows.append({**row, "model": f"{model_name} x{len(cv['members'])} ensemble",
                                               "members": len(cv["members"]),
                                               "eval": cv_scores(real, data["lamost"], e_oof, e_lam, args.folds)})
                    else:
                        trainable = ds.subset(ds.meta["split"] != 2)
                        res, t_train = _fit(args, trainable, model_name,
                                            args.work / tag.replace(" ", "_").replace("(", "").replace(")", ""))
                        row.update(n_train=int((trainable.meta["split"] == 0).sum()), train_seconds=round(t_train, 1),
                                   best_epoch=res.best_epoch)
                        evals = {"real test": test, "real test, FITS only": test.subset(test.meta["source"] == "fits"),
                                 "LAMOST": data["lamost"]}
                        if train_name in data["sims"]:
                            evals["simulated test"] = data["sims"][train_name].split("test")
                        for name, eds in evals.items():
                            if len(eds):
                                row["eval"][name] = _score(eds, _proba(res, eds))
                    results.append(row)
                    results.extend(extra_rows)
                    if on_row is not None:
                        on_row(_report(args, results, t_start, complete=False))
                    print(f"[{time.time() - t_start:7.0f}s] {tag}: " + ", ".join(
                        f"{k} bal.acc {v['balanced_accuracy']:.3f}" for k, v in row["eval"].items()), flush=True)
    return _report(args, results, t_start, complete=True)


def _report(args: argparse.Namespace, results: list[dict[str, Any]], t_start: float, complete: bool) -> dict[str, Any]:
    return {
        "benchmark": "accuracy",
        "complete": complete,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "settings": {k: (Path(v).name if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("shared_data", "work", "out")},
        "machine": environment(device=_device()),
        "seconds": round(time.time() - t_start, 1),
        "results": results,
    }


def _device() -> str:
    """What trained the networks, e.g. 'jax: cuda:0' (from :func:`specclass.training.device_info`)."""
    from specclass.training import device_info

    info = device_info()
    return f"{info['backend']}: {', '.join(info['devices'])}"


# --------------------------------------------------------------------------- report
def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown(report: dict[str, Any]) -> str:
    """Markdown tables: one per scheme/selection/training set, both models side by side."""
    lines = [
        "# Accuracy benchmark",
        "",
        *([] if report.get("complete", True) else ["**Partial: the run was still going (or was stopped) when this was written.**", ""]),
        (f"Command: `{report['command']}` ({report['seconds']:.0f} s, {report['machine']['cpus']} CPUs, "
        f"Keras backend {report['machine'].get('keras_backend', 'tensorflow')}, trained on "
        f"{report['machine'].get('device', 'cpu')}). "
        "Balanced accuracy = mean per-class recall. Per-class recall shows correct/support; "
        "`*` marks a class with fewer than 20 test spectra (its figure is not reliable)."),
        "",
    ]
    groups: dict[tuple, list] = {}
    for r in report["results"]:
        groups.setdefault((r["scheme"], r["selection"], r["train"]), []).append(r)
    for (scheme, selection, train_name), rows in groups.items():
        sel = "ZWARNING = 0 only (text spectra have no ZWARNING and drop out)" if selection == "zwarning0" else "all spectra"
        folds = rows[0].get("folds")
        how = f", {folds}-fold cross-validation" if folds else ""
        lines += [f"## {scheme}, {sel}, trained on {train_name}{how}", ""]
        lines += ["| test set | model | n | balanced acc. | accuracy | per-class recall | accuracy by source |",
                  "| --- | --- | ---: | ---: | ---: | --- | --- |"]
        test_names = list(dict.fromkeys(name for r in rows for name in r["eval"]))
        for test_name in test_names:
            for r in rows:
                e = r["eval"].get(test_name)
                if not e:
                    continue
                pcs = "; ".join(
                    f"{c['name']} {_fmt(c['recall']) if c['support'] else 'n/a'} ({c['correct']}/{c['support']}){'*' if c['small'] else ''}"
                    for c in e["per_class"] if c["support"] or test_name.startswith("real")
                )
                src = "; ".join(f"{k} {_fmt(v['accuracy'])} (n={v['n']})" for k, v in e["by_source"].items())
                lines.append(f"| {test_name} | {r['model']} | {e['n']} | {_fmt(e['balanced_accuracy'])} | "
                             f"{_fmt(e['accuracy'])} | {pcs} | {src} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared-data", type=Path, default=shared_data_dir(), help="the shared data folder (default ../shared/data)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="where accuracy.json/.md go")
    p.add_argument("--work", type=Path, default=None, help="run folders (default OUT/tmp/accuracy-runs, git-ignored)")
    p.add_argument("--schemes", nargs="+", default=["seed4", "class3"], choices=["seed4", "class3"])
    p.add_argument("--selections", nargs="+", default=["all", "zwarning0"], choices=["all", "zwarning0"])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--train-sets", nargs="+", default=["real", "real+sim"], choices=["real", "real+sim"],
                   help="train on real spectra only, on real + simulated, or both (default both)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-sim-per-class", type=int, default=300, help="simulated spectra per class (0 = real only)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--sim-labels", choices=("pipeline", "construction", "both"), default="pipeline",
                   help="label simulated spectra by the emulated SDSS pipeline (default), by construction, or "
                        "train on each ('real+sim' and 'real+sim (construction labels)')")
    p.add_argument("--no-pipeline-rule", "--no-line-rule", dest="pipeline_rule", action="store_false",
                   help="leave out the cross-validation rows '... + SDSS pipeline rule' (GALAXY vs QSO by template "
                        "fits, AGN vs GALAXY by the measured lines, as specclass predict/evaluate do by default) "
                        "and '... + SDSS line rule' (seed4: the line step alone)")
    p.add_argument("--no-emulator", dest="emulator", action="store_false",
                   help="leave out the pipeline-emulator row (the non-ML anchor)")
    p.add_argument("--no-text-stars", action="store_true", help="leave out the 963 flux-only text star spectra")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.add_argument("--evaluate-only", action="store_true",
                   help="no training: evaluate the run folders an earlier run with the same settings left in --work")
    p.add_argument("--quick", action="store_true", help="smoke test: seed4, all spectra, 2 epochs, 50 simulated per class")
    p.add_argument("--stem", default=None, help="output file name stem (default accuracy, accuracy-quick with --quick)")
    p.add_argument("--folds", type=int, default=0,
                   help="K-fold cross-validation over all real spectra instead of the single test split (0 = off)")
    p.add_argument("--members", type=int, default=1,
                   help="with --folds: train K members per fold (training seeds --seed ... --seed+K-1, as "
                        "'specclass train --ensemble K') and add a row for their ensemble")
    p.add_argument("--reuse", action="store_true",
                   help="load a run folder that a previous run of this script finished instead of training it again "
                        "(e.g. add members to an earlier --folds run with the same --work)")
    p.add_argument("--rule-on-grid", action="store_true",
                   help="the pipeline rule and the emulator row fit the gridded rows only, never the spectra's own "
                        "files (what a dataset whose files are gone gets)")
    p.add_argument("--bundle", type=Path, default=None, help="read the real and LAMOST datasets from this file "
                   "(made by --save-bundle) instead of --shared-data")
    p.add_argument("--save-bundle", type=Path, default=None,
                   help="build the real and LAMOST datasets of --schemes, write them to this file and stop")
    args = p.parse_args(argv)
    if args.folds == 1 or args.folds < 0:
        p.error("--folds must be 0 (off) or >= 2")
    if args.members < 1 or (args.members > 1 and not args.folds):
        p.error("--members K needs K >= 1, and K > 1 needs --folds")
    if args.quick:
        args.schemes, args.selections, args.epochs, args.n_sim_per_class = ["seed4"], ["all"], 2, 50
    args.work = args.work or args.out / "tmp" / ("accuracy-runs-quick" if args.quick else "accuracy-runs")
    if args.bundle is None and not (args.shared_data / "sdss").is_dir():
        p.error(f"--shared-data {args.shared_data}: no sdss folder there")
    if args.bundle is not None and not args.bundle.is_file():
        p.error(f"--bundle {args.bundle}: no such file")
    if args.save_bundle is not None:
        path = save_bundle(args.save_bundle, args.shared_data, args.schemes, args.seed, not args.no_text_stars)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return 0
    stem = args.stem or ("accuracy-quick" if args.quick else "accuracy")
    global _GRID_ONLY
    _GRID_ONLY = args.rule_on_grid

    def write(report: dict[str, Any]) -> None:
        write_report(args.out, stem, report, markdown)

    write(run_benchmark(args, on_row=write))
    print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
