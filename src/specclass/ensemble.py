"""Ensembles: several run folders that classify together, kept as one run folder.

Layout (written by ``specclass train --ensemble K`` or ``specclass ensemble RUN_A RUN_B ... --out RUN``)::

    RUN/
      ensemble.json         member names, how they are combined, class names, grid
      preprocessing.json    the members' shared preprocessing (a copy; it marks RUN as a
                            run folder for ``specclass predict RUN FILES``)
      members/<name>/       one complete run folder per member (model.keras,
                            preprocessing.json, calibration.json, config.json, ...)
      metrics.json, report.html, ...   from ``specclass evaluate RUN DATASET``

Every member must have the same preprocessing (class names in the same order, the
same wavelength grid, normalisation, channels, masked bits): the spectra are
preprocessed once and fed to every member.

Combination (:data:`COMBINATION`): the mean of the members' log-probabilities,
i.e. the geometric mean of their probabilities, renormalised to sum to 1::

    p(c) = exp(mean_k log p_k(c)) / sum_c' exp(mean_k log p_k(c'))

with each ``p_k`` the member's own **calibrated** probabilities (its
``calibration.json`` temperature; :func:`specclass.calibration.apply_temperature`),
or its raw softmax with ``calibrate=False`` (``--no-calibration``). This is the
"logarithmic opinion pool" (Genest & Zidek 1986, Statistical Science 1, 114) and
what averaging the members' logits amounts to for softmax outputs (Hinton 2002,
products of experts). ``uncertain`` and ``predicted_class`` follow from the combined
probabilities exactly as for a single run.

:func:`specclass.persistence.load_run` on an ensemble folder returns an
:class:`EnsembleRun`: a :class:`~specclass.persistence.LoadedRun` whose ``model``
(:class:`EnsembleModel`) has ``predict(x, batch_size, verbose)`` and
``output_shape`` like a Keras model, so ``predict``, ``evaluate`` and the Python API
use it unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from specclass import persistence
from specclass.persistence import LoadedRun, RunFolderError
from specclass.preprocessing import Preprocessor

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"
MEMBERS_DIR = "members"
FORMAT_NAME = "specclass-ensemble"
FORMAT_VERSION = 1
#: How member probabilities are combined (module docstring).
COMBINATION = "mean_log_probability"
COMBINATION_TEXT = ("mean of the members' log-probabilities (geometric mean of their calibrated probabilities), "
                    "renormalised to sum to 1")
#: Files and folders of a source run not copied into an assembled ensemble (training resume state).
NOT_COPIED = ("checkpoints",)
#: Floor before the log, as :mod:`specclass.calibration` (float32's smallest normal number).
_P_FLOOR = float(np.finfo(np.float32).tiny)


class EnsembleError(RunFolderError):
    """An ensemble folder or its members are incomplete or incompatible (names the member and the reason)."""


def is_ensemble(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` holds ``ensemble.json``."""
    return (Path(run_dir) / ENSEMBLE_FILE).is_file()


def member_name_for_seed(seed: int) -> str:
    """Member folder name of ``specclass train --ensemble``: ``seed42`` (``seed-3`` for a negative seed)."""
    return f"seed{int(seed)}"


def combine_probabilities(member_proba: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Combine the members' probabilities: mean log-probability, renormalised (module docstring).

    Args:
        member_proba: ``(K, N, C)`` (or a sequence of K ``(N, C)`` arrays) class
            probabilities; zeros are floored at float32's smallest normal number.

    Returns:
        ``(N, C)`` float32, rows summing to 1.

    Raises:
        ValueError: no member, arrays of different shapes, or not 3-D.
    """
    p = np.asarray(member_proba, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] == 0:
        raise ValueError(f"member probabilities must be (K >= 1, N, C), got shape {p.shape}")
    logp = np.log(np.clip(p, _P_FLOOR, None)).mean(axis=0)
    if logp.shape[0] == 0:
        return np.zeros(logp.shape, dtype=np.float32)
    logp -= logp.max(axis=1, keepdims=True)
    q = np.exp(logp)
    return (q / q.sum(axis=1, keepdims=True)).astype(np.float32)


class EnsembleModel:
    """The members' networks behind one ``predict`` that returns the combined probabilities.

    Attributes:
        members: the members' :class:`~specclass.persistence.LoadedRun` s.
        names: their names (folders under ``members/``).
        calibrate: apply each member's temperature before combining (default True);
            set by :meth:`EnsembleRun.use_calibration`.
        output_shape: ``(None, n_classes)``; ``input_shape``: the first member's.
    """

    def __init__(self, members: Sequence[LoadedRun], names: Sequence[str]) -> None:
        self.members = list(members)
        self.names = list(names)
        self.calibrate = True
        self.output_shape = (None, int(self.members[0].model.output_shape[-1]))
        self.input_shape = getattr(self.members[0].model, "input_shape", None)

    def member_probabilities(self, x: np.ndarray, batch_size: int = 256, *, calibrate: bool | None = None) -> np.ndarray:
        """``(K, N, C)`` float32: every member's probabilities for preprocessed ``x`` ``(N, L, channels)``.

        ``calibrate`` (default :attr:`calibrate`): each member's own temperature
        applied (``T = 1`` for a member without ``calibration.json``).
        """
        from specclass.calibration import apply_temperature

        calibrate = self.calibrate if calibrate is None else calibrate
        out = []
        for run in self.members:
            p = np.asarray(run.model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)
            out.append(apply_temperature(p, run.temperature) if calibrate and run.temperature != 1.0 else p)
        return np.stack(out)

    def predict(self, x: np.ndarray, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        """``(N, C)`` combined probabilities (:func:`combine_probabilities`) for preprocessed ``x``."""
        return combine_probabilities(self.member_probabilities(x, batch_size))

    def raw_and_calibrated(self, x: np.ndarray, batch_size: int = 256, *,
                           calibrate: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Combined raw and combined calibrated probabilities (each ``(N, C)``), the networks run once.

        With ``calibrate=False`` both are the combination of the raw softmax outputs.
        """
        from specclass.calibration import apply_temperature

        raw = self.member_probabilities(x, batch_size, calibrate=False)
        if not calibrate:
            combined = combine_probabilities(raw)
            return combined, combined.copy()
        cal = np.stack([apply_temperature(p, run.temperature) for p, run in zip(raw, self.members)])
        return combine_probabilities(raw), combine_probabilities(cal)


class EnsembleRun(LoadedRun):
    """What :func:`specclass.persistence.load_run` returns for an ensemble folder.

    A :class:`~specclass.persistence.LoadedRun` (unpacks as ``(model, preprocessor,
    config)``) whose ``model`` is an :class:`EnsembleModel`, ``calibration`` is
    ``None`` and ``temperature`` 1 (the members calibrate themselves); also
    ``members`` (name -> member :class:`LoadedRun`) and ``ensemble`` (``ensemble.json``).
    """

    members: dict[str, LoadedRun]
    ensemble: dict[str, Any]

    def __new__(cls, run_dir: Path, info: dict[str, Any], members: Mapping[str, LoadedRun]) -> "EnsembleRun":
        names = list(members)
        first = members[names[0]]
        model = EnsembleModel(list(members.values()), names)
        config = ensemble_config(info, members)
        obj = super().__new__(cls, model, first.preprocessor, config, run_dir, None, None)
        obj.members, obj.ensemble = dict(members), dict(info)
        return obj

    def use_calibration(self, calibrate: bool = True) -> tuple[float, str]:
        """Switch the members' temperatures on or off; return ``(1.0, description)`` for
        :func:`specclass.predict.run_temperature` (the combination is already calibrated)."""
        self.model.calibrate = bool(calibrate)
        k = len(self.members)
        if not calibrate:
            return 1.0, f"ensemble of {k} members: {COMBINATION_TEXT.replace('calibrated', 'raw softmax')}"
        temps = ", ".join(f"{name} T = {run.temperature:.4g}" + ("" if run.calibration else " (no calibration.json)")
                          for name, run in self.members.items())
        return 1.0, f"ensemble of {k} members: {COMBINATION_TEXT} (temperature scaling per member: {temps})"


def ensemble_config(info: Mapping[str, Any], members: Mapping[str, LoadedRun]) -> dict[str, Any]:
    """The ``config`` of an :class:`EnsembleRun`: ``ensemble.json`` plus a few fields of each member's config."""
    models = sorted({str(run.config.get("model", "?")) for run in members.values()})
    keep = ("model", "seed", "epochs", "epochs_done", "best_epoch", "best_score", "monitor", "dataset")
    return {
        "model": f"ensemble of {len(members)} ({', '.join(models)})",
        "ensemble": dict(info),
        "members": {name: {k: run.config[k] for k in keep if k in run.config} | {"temperature": run.temperature}
                    for name, run in members.items()},
    }


# --------------------------------------------------------------------------- compatibility
def _grid_text(pre: Preprocessor) -> str:
    lo, hi = 10 ** float(pre.loglam[0]), 10 ** float(pre.loglam[-1])
    return f"{pre.input_length} pixels, {lo:.2f}-{hi:.2f} Å (loglam {pre.loglam[0]:.5f} ...)"


def preprocessing_differences(a: Preprocessor, b: Preprocessor) -> list[str]:
    """What differs between two members' preprocessing (empty when they are interchangeable).

    Compared: class names (and their order), the grid (pixel count, loglam to
    1e-7 dex), normalisation, channels, clip, masked bits, outlier masking.
    """
    diffs = []
    if list(a.class_names) != list(b.class_names):
        diffs.append(f"classes {list(b.class_names)} instead of {list(a.class_names)}")
    if a.input_length != b.input_length or not np.allclose(a.loglam, b.loglam, rtol=0, atol=1e-7):
        diffs.append(f"grid {_grid_text(b)} instead of {_grid_text(a)}")
    for field in ("normalisation", "channels", "clip", "bad_mask_bits", "mask_outliers"):
        va, vb = getattr(a, field), getattr(b, field)
        if va != vb:
            diffs.append(f"{field} {vb!r} instead of {va!r}")
    return diffs


def check_compatible(preprocessors: Mapping[str, Preprocessor], where: str = "", what: str = "member") -> Preprocessor:
    """The members' shared preprocessing; refuse members that differ from the first.

    Args:
        preprocessors: member name (or path) -> its preprocessing, at least one.
        where: prefix of the message (e.g. the ensemble folder).
        what: what the names are, for the message (``member``, ``run folder``).

    Raises:
        EnsembleError: no member, or one whose preprocessing differs (names the member and what differs).
    """
    if not preprocessors:
        raise EnsembleError(f"{where}an ensemble needs at least one member")
    names = list(preprocessors)
    ref = preprocessors[names[0]]
    for name in names[1:]:
        diffs = preprocessing_differences(ref, preprocessors[name])
        if diffs:
            raise EnsembleError(f"{where}{what} {name} cannot join {what} {names[0]}: it has {'; '.join(diffs)} "
                                "(ensemble members must share classes, grid and preprocessing)")
    return ref


# --------------------------------------------------------------------------- write / load
def write_ensemble(run_dir: str | os.PathLike, names: Sequence[str], *, created_by: str,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Check the members under ``run_dir/members/`` and write ``ensemble.json`` and ``preprocessing.json``.

    Args:
        run_dir: the ensemble folder; each name in ``names`` is a run folder ``members/<name>/``.
        names: member names, in order.
        created_by: the command that made it (recorded).
        extra: more entries for ``ensemble.json``.

    Returns:
        Path of ``ensemble.json``.

    Raises:
        EnsembleError: a member folder or its preprocessing is missing, or members are incompatible.
    """
    run_dir = Path(run_dir)
    pres = {name: _member_preprocessor(run_dir, name) for name in names}
    pre = check_compatible(pres, f"{run_dir}: ")
    seeds = {}
    for name in names:
        cfg_path = run_dir / MEMBERS_DIR / name / persistence.CONFIG_FILE
        cfg = persistence.read_json(cfg_path) if cfg_path.is_file() else {}
        if "seed" in cfg:
            seeds[name] = cfg["seed"]
    info = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "members": list(names),
        "combination": COMBINATION,
        "combination_text": COMBINATION_TEXT,
        "calibration": "each member's own calibration.json (temperature scaling) before combining",
        "class_names": list(pre.class_names),
        "grid": dict(pre.grid),
        "seeds": seeds,
        "created_by": created_by,
        **dict(extra or {}),
    }
    persistence.write_json_atomic(run_dir / persistence.PREPROCESSING_FILE, pre.to_dict())
    return persistence.write_json_atomic(run_dir / ENSEMBLE_FILE, info)


def _member_preprocessor(run_dir: Path, name: str) -> Preprocessor:
    member = run_dir / MEMBERS_DIR / name
    if not member.is_dir():
        raise EnsembleError(f"{run_dir}: member {name} listed in {ENSEMBLE_FILE} is missing ({member})")
    try:
        return persistence.load_preprocessor(member)
    except RunFolderError as exc:
        raise EnsembleError(f"{run_dir}: member {name}: {exc}") from None


def read_ensemble_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``ensemble.json``, checked.

    Raises:
        EnsembleError: unreadable, another format, a newer version, or no members.
    """
    path = Path(run_dir) / ENSEMBLE_FILE
    info = persistence.read_json(path)
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise EnsembleError(f"{path}: not a specclass ensemble file (format {info.get('format') if isinstance(info, dict) else None!r})")
    if int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise EnsembleError(f"{path}: format_version {info['format_version']} is newer than this specclass reads "
                            f"({FORMAT_VERSION}); upgrade specclass")
    members = info.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) and m for m in members):
        raise EnsembleError(f"{path}: 'members' must be a non-empty list of member folder names")
    if info.get("combination", COMBINATION) != COMBINATION:
        raise EnsembleError(f"{path}: combination {info['combination']!r} is unknown (this specclass: {COMBINATION})")
    return info


def load_ensemble(run_dir: str | os.PathLike, fmt: str = "keras", *, compile: bool = False,
                  loader: Callable[[Path], LoadedRun] | None = None) -> EnsembleRun:
    """Load an ensemble folder (module docstring) as an :class:`EnsembleRun`.

    Args:
        run_dir: folder holding ``ensemble.json`` and ``members/<name>/``.
        fmt: model file of every member (``keras``, ``h5``, ``json``).
        compile: compile the members' models.
        loader: how to load one member folder (default
            :func:`specclass.persistence.load_run` with ``fmt``); e.g. its exported
            ``model.numpy.h5`` where Keras is absent.

    Raises:
        EnsembleError: ``ensemble.json`` invalid, a member missing or unloadable (names the
            member and the file), a member that is itself an ensemble, members whose
            preprocessing differs, or classes/grid that differ from ``ensemble.json``.
    """
    run_dir = Path(run_dir)
    info = read_ensemble_info(run_dir)
    if loader is None:
        def loader(path: Path) -> LoadedRun:
            return persistence.load_run(path, fmt=fmt, compile=compile)
    members: dict[str, LoadedRun] = {}
    for name in info["members"]:
        path = run_dir / MEMBERS_DIR / name
        if not path.is_dir():
            raise EnsembleError(f"{run_dir}: member {name} listed in {ENSEMBLE_FILE} is missing ({path})")
        if is_ensemble(path):
            raise EnsembleError(f"{run_dir}: member {name} is itself an ensemble; nested ensembles are not supported")
        try:
            members[name] = loader(path)
        except RunFolderError as exc:
            raise EnsembleError(f"{run_dir}: member {name} cannot be loaded: {exc}") from None
    pre = check_compatible({n: r.preprocessor for n, r in members.items()}, f"{run_dir}: ")
    if "class_names" in info and list(info["class_names"]) != list(pre.class_names):
        raise EnsembleError(f"{run_dir}: the members' classes {pre.class_names} differ from {ENSEMBLE_FILE}'s "
                            f"{info['class_names']}")
    if "grid" in info:
        try:
            listed = Preprocessor(grid=dict(info["grid"]), class_names=list(pre.class_names))
        except (KeyError, TypeError, ValueError) as exc:
            raise EnsembleError(f"{run_dir / ENSEMBLE_FILE}: 'grid' is not valid ({exc})") from None
        if listed.input_length != pre.input_length or not np.allclose(listed.loglam, pre.loglam, rtol=0, atol=1e-7):
            raise EnsembleError(f"{run_dir}: the members' grid ({_grid_text(pre)}) differs from {ENSEMBLE_FILE}'s "
                                f"({_grid_text(listed)})")
    for name, run in members.items():
        n_out = int(run.model.output_shape[-1])
        if n_out != len(pre.class_names):
            raise EnsembleError(f"{run_dir}: member {name}'s network has {n_out} outputs for "
                                f"{len(pre.class_names)} classes")
    return EnsembleRun(run_dir, info, members)


def unfinished_hint(run_dir: str | os.PathLike) -> str | None:
    """A sentence for a folder with ``members/`` but no ``ensemble.json`` (an interrupted ``train --ensemble``)."""
    members = Path(run_dir) / MEMBERS_DIR
    if members.is_dir() and not is_ensemble(run_dir):
        names = sorted(d.name for d in members.iterdir() if d.is_dir())
        return (f"{run_dir}: an unfinished ensemble (members so far: {', '.join(names) or 'none'}; no "
                f"{ENSEMBLE_FILE}); re-run the same 'specclass train ... --ensemble K' command to finish it")
    return None


# --------------------------------------------------------------------------- assemble existing runs
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def _member_names(sources: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for src in sources:
        base = _NAME_BAD.sub("_", src.resolve().name).strip("._") or "member"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def assemble(sources: Sequence[str | os.PathLike], out: str | os.PathLike, *, fmt: str = "keras") -> Path:
    """Copy existing compatible run folders into a new ensemble folder ``out`` (``specclass ensemble``).

    Each source is copied (regular files only, symbolic links followed; its
    ``checkpoints/`` resume state left out) to ``out/members/<its folder name>``
    (``-2``, ``-3`` appended to repeated names), then ``ensemble.json`` is written.
    The folder is built under a temporary name beside ``out`` and renamed at the
    end, so a failure leaves no half-made ensemble.

    Args:
        sources: run folders written by ``specclass train`` (at least one; not ensembles).
        out: the ensemble folder to create; must not exist (or be empty).
        fmt: model file every member must hold (``keras``, ``h5``, ``json``).

    Returns:
        ``out``.

    Raises:
        EnsembleError: ``out`` exists and is not empty, no source, a source that is
            missing, an ensemble, lacks its model file or preprocessing, or whose
            classes/grid/preprocessing differ from the first's (names the source and the reason).
    """
    out = Path(out)
    srcs = [Path(s) for s in sources]
    if not srcs:
        raise EnsembleError("give at least one run folder to put in the ensemble")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EnsembleError(f"{out}: exists and is not empty; choose a new --out folder")
    names = _member_names(srcs)
    pres: dict[str, Preprocessor] = {}
    for name, src in zip(names, srcs):
        if not src.is_dir():
            raise EnsembleError(f"{src}: no such run folder")
        if is_ensemble(src):
            raise EnsembleError(f"{src}: is itself an ensemble; give its member folders ({src / MEMBERS_DIR}/*) instead")
        needed = persistence.MODEL_FILES[fmt]
        for file in ((needed,) if isinstance(needed, str) else needed):
            if not (src / file).is_file():
                raise EnsembleError(f"{src}: missing {file}, so it cannot be an ensemble member (a run folder "
                                    "written by 'specclass train' holds it)")
        try:
            pres[str(src)] = persistence.load_preprocessor(src)
        except RunFolderError as exc:
            raise EnsembleError(f"{src}: cannot be an ensemble member: {exc}") from None
        if not (src / persistence.CALIBRATION_FILE).is_file():
            log.warning("%s has no %s: it joins the ensemble with its raw softmax (T = 1)", src,
                        persistence.CALIBRATION_FILE)
    check_compatible(pres, what="run folder")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name, src in zip(names, srcs):
            shutil.copytree(src, tmp / MEMBERS_DIR / name, symlinks=False, ignore=shutil.ignore_patterns(*NOT_COPIED))
        write_ensemble(tmp, names, created_by="specclass ensemble",
                       extra={"sources": {n: str(s) for n, s in zip(names, srcs)}})
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
