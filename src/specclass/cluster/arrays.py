"""Build a dataset as a SLURM job array (one shard per task) plus a merge job.

The work is described by an :class:`ArrayPlan`, a small JSON file written next to
the shards: the input files/folders, the number of shards, where shards and the
final dataset go, and the options of
:func:`specclass.spectra.build.build_shard` / :func:`~specclass.spectra.build.merge_datasets`.
Each array task runs ``specclass slurm run-shard PLAN --index $SLURM_ARRAY_TASK_ID``
(:func:`run_shard`); a merge job submitted with ``--dependency=afterok:ARRAYID``
runs ``specclass slurm merge-shards PLAN`` (:func:`merge`). The shards cut the
sorted file list into contiguous blocks, so a shard's content depends only on the
inputs, and the merged dataset equals the one built in one process.

``kind = "predict"`` plans classify spectrum files instead (``specclass slurm
predict-array``): each task writes the CSV of one contiguous block of the inputs
(:func:`specclass.predict_shards.predict_shard`), and the merge job joins them
(:func:`~specclass.predict_shards.merge_prediction_csvs`) into the CSV one
``specclass predict`` process writes.

A shard that failed is re-run alone: ``specclass slurm build-dataset-array --plan
PLAN --shards missing`` submits an array of just the shards whose file is missing
(or ``--shards 3,5``) and a new merge job after it; the old merge job, which can
never start once its dependency failed, is cancelled.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from specclass.cluster import slurm
from specclass.cluster.slurm import JobSpec

PLAN_FORMAT = "specclass-array-plan"

#: ``build_shard`` keyword options a plan may carry (JSON values only). ``grid`` is
#: ``{"loglam_min", "loglam_max", "step"}`` (:meth:`LogLamGrid.from_range`);
#: ``bad_mask_bits`` an int or comma-separated and_mask bit names.
BUILD_OPTIONS = ("labels", "golden", "strict", "bad_mask_bits", "text_labels", "label", "min_good_fraction", "grid")
#: ``merge_datasets`` keyword options a plan may carry.
MERGE_OPTIONS = ("val_frac", "test_frac", "seed", "radius_arcsec")
#: ``predict_files`` keyword options a predict plan may carry.
PREDICT_OPTIONS = ("batch_size", "fmt", "calibrate", "uncertain_below", "min_good_pixels")
PLAN_KINDS = ("dataset", "predict")


@dataclass
class ArrayPlan:
    """A dataset build split into shards.

    Attributes:
        inputs: spectrum files and/or folders (absolute paths).
        out: the merged dataset file (``.h5`` or ``.npz``).
        n_shards: number of shards (array tasks).
        shard_dir: folder of the shard files and task logs.
        build_options: keyword options of ``build_shard`` (see :data:`BUILD_OPTIONS`).
        merge_options: keyword options of ``merge_datasets`` (see :data:`MERGE_OPTIONS`).
        python: interpreter the jobs run (default: the one that made the plan).
        jobs: job ids submitted for this plan, newest last (``{"array": …, "merge": …}``).
        kind: ``"dataset"`` (build shards, merge a dataset) or ``"predict"``
            (classify shards with the run folder ``run``, merge their CSVs into ``out``).
        run: the run folder of a predict plan.
        predict_options: keyword options of ``predict_files`` (see :data:`PREDICT_OPTIONS`).
    """

    inputs: list[str]
    out: str
    n_shards: int
    shard_dir: str
    build_options: dict[str, Any] = field(default_factory=dict)
    merge_options: dict[str, Any] = field(default_factory=dict)
    python: str = field(default_factory=lambda: sys.executable)
    jobs: list[dict[str, str]] = field(default_factory=list)
    kind: str = "dataset"
    run: str | None = None
    predict_options: dict[str, Any] = field(default_factory=dict)

    def shard_path(self, index: int) -> Path:
        """File of shard ``index`` (``shard-0003-of-0008.h5``; ``.csv`` for a predict plan)."""
        if not 0 <= index < self.n_shards:
            raise ValueError(f"shard index {index} not in [0, {self.n_shards})")
        suffix = ".csv" if self.kind == "predict" else ".h5"
        return Path(self.shard_dir) / f"shard-{index:04d}-of-{self.n_shards:04d}{suffix}"

    def missing_shards(self) -> list[int]:
        """Indices of shards whose file does not exist yet."""
        return [i for i in range(self.n_shards) if not self.shard_path(i).is_file()]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON, atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"format": PLAN_FORMAT, "version": 1, **asdict(self)}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ArrayPlan":
        """Read a plan written by :meth:`save`.

        Raises:
            ValueError: not a plan file, or a damaged one (names the file).
            FileNotFoundError: no such file.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a specclass array plan (bad JSON: {exc})") from exc
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise ValueError(f"{path}: not a specclass array plan (format != {PLAN_FORMAT!r})")
        data.pop("format")
        data.pop("version", None)
        if data.get("kind", "dataset") not in PLAN_KINDS:
            raise ValueError(f"{path}: plan kind {data.get('kind')!r} is not one of {PLAN_KINDS}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"{path}: damaged array plan: {exc}") from exc


def make_plan(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, n_shards: int, *,
              shard_dir: str | os.PathLike | None = None, build_options: Mapping[str, Any] | None = None,
              merge_options: Mapping[str, Any] | None = None, python: str | None = None) -> ArrayPlan:
    """Describe a sharded build; paths are made absolute (jobs may start elsewhere).

    Args:
        inputs: spectrum files and/or folders.
        out: final dataset file.
        n_shards: number of array tasks (>= 1).
        shard_dir: default ``<out>.shards/``.

    Raises:
        ValueError: ``n_shards < 1``, no inputs, an input that does not exist, or
            an option not in :data:`BUILD_OPTIONS` / :data:`MERGE_OPTIONS`.
    """
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise ValueError(f"n_shards={n_shards!r}: must be a positive integer")
    if not inputs:
        raise ValueError("no input files or folders given")
    paths = [Path(p).resolve() for p in inputs]
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        raise ValueError(f"input(s) not found: {absent}")
    build_options = dict(build_options or {})
    merge_options = dict(merge_options or {})
    bad = sorted(set(build_options) - set(BUILD_OPTIONS)) + sorted(set(merge_options) - set(MERGE_OPTIONS))
    if bad:
        raise ValueError(f"unknown build/merge option(s) {bad}; allowed: {BUILD_OPTIONS + MERGE_OPTIONS}")
    out = Path(out).resolve()
    sdir = Path(shard_dir).resolve() if shard_dir else out.with_name(out.name + ".shards")
    return ArrayPlan([str(p) for p in paths], str(out), n_shards, str(sdir), build_options, merge_options,
                     python or sys.executable)


def make_predict_plan(run: str | os.PathLike, inputs: Sequence[str | os.PathLike], out: str | os.PathLike,
                      n_shards: int, *, shard_dir: str | os.PathLike | None = None,
                      predict_options: Mapping[str, Any] | None = None, python: str | None = None) -> ArrayPlan:
    """Describe ``predict`` over ``inputs`` as ``n_shards`` array tasks and a merge into the CSV ``out``.

    Raises:
        ValueError: as :func:`make_plan`, a run folder that does not exist, or an
            option not in :data:`PREDICT_OPTIONS`.
    """
    if not Path(run).is_dir():
        raise ValueError(f"{run}: no such run folder")
    bad = sorted(set(predict_options or {}) - set(PREDICT_OPTIONS))
    if bad:
        raise ValueError(f"unknown predict option(s) {bad}; allowed: {PREDICT_OPTIONS}")
    plan = make_plan(inputs, out, n_shards, shard_dir=shard_dir, python=python)
    plan.kind, plan.run, plan.predict_options = "predict", str(Path(run).resolve()), dict(predict_options or {})
    return plan


def run_shard(plan: ArrayPlan, index: int) -> Path:
    """Build (or, for a predict plan, classify) shard ``index`` of ``plan`` into
    :meth:`ArrayPlan.shard_path` (what one array task does)."""
    from specclass.spectra.build import build_shard

    out = plan.shard_path(index)
    out.parent.mkdir(parents=True, exist_ok=True)
    if plan.kind == "predict":
        from specclass.predict_shards import predict_shard

        rows, failures = predict_shard(plan.run, plan.inputs, index, plan.n_shards, out, **plan.predict_options)
        print(f"shard {index}/{plan.n_shards}: {len(rows)} spectra classified, {len(failures)} not -> {out}")
        return out
    path, report = build_shard(plan.inputs, index, plan.n_shards, out, **build_kwargs(plan.build_options))
    print(f"shard {index}/{plan.n_shards}: {report.n_kept} spectra kept of {report.n_spectra} read "
          f"from {report.n_files} files -> {path}")
    return Path(path)


def build_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a plan's JSON ``build_options`` into :func:`~specclass.spectra.build.build_shard` arguments."""
    kwargs = dict(options)
    if kwargs.get("grid") is not None:
        from specclass.spectra.grid import LogLamGrid

        g = kwargs["grid"]
        kwargs["grid"] = LogLamGrid.from_range(float(g["loglam_min"]), float(g["loglam_max"]), float(g["step"]))
    if isinstance(kwargs.get("bad_mask_bits"), str):
        from specclass.spectra.grid import mask_bits

        text = kwargs["bad_mask_bits"].strip()
        kwargs["bad_mask_bits"] = 0 if text.lower() in ("", "0", "none") else mask_bits(text)
    return kwargs


def merge(plan: ArrayPlan) -> Path:
    """Merge all shards of ``plan`` into ``plan.out`` (what the merge job does).

    Raises:
        FileNotFoundError: shards are missing; the message says how to re-run them.
    """
    from specclass.spectra.build import merge_datasets

    missing = plan.missing_shards()
    if missing:
        raise FileNotFoundError(
            f"shards {missing} of {plan.n_shards} are missing in {plan.shard_dir}; re-run them with "
            f"`specclass slurm {'predict' if plan.kind == 'predict' else 'build-dataset'}-array --plan <plan.json> "
            "--only-shards missing`"
        )
    if plan.kind == "predict":
        from specclass.predict_shards import merge_prediction_csvs

        n_rows, n_fail = merge_prediction_csvs([plan.shard_path(i) for i in range(plan.n_shards)], plan.out)
        print(f"merged {plan.n_shards} shards: {n_rows} spectra classified, {n_fail} not -> {plan.out}")
        return Path(plan.out)
    ds, report = merge_datasets([plan.shard_path(i) for i in range(plan.n_shards)], **plan.merge_options)
    path = ds.save(plan.out)
    print(f"merged {plan.n_shards} shards: {len(ds)} spectra -> {path}")
    return Path(path)


def plan_path_for(out: str | os.PathLike) -> Path:
    """Default plan file for a dataset ``out``: ``<out>.shards/plan.json``."""
    out = Path(out).resolve()
    return out.with_name(out.name + ".shards") / "plan.json"


def _array_range(indices: Sequence[int]) -> str:
    idx = sorted(set(indices))
    if idx == list(range(idx[0], idx[-1] + 1)) and len(idx) > 1:
        return f"{idx[0]}-{idx[-1]}"
    return ",".join(str(i) for i in idx)


def render_scripts(plan_path: str | os.PathLike, plan: ArrayPlan, spec: JobSpec,
                   shards: Sequence[int] | None = None) -> tuple[str, str]:
    """Return ``(array script, merge script)`` for ``plan`` (only ``shards`` if given).

    The array script's job options come from ``spec`` (``array`` and ``output``
    are set here: one log per task in the shard folder, ``%A_%a``); the merge
    script uses the same options with one task and no array. The merge job's
    ``--dependency`` is given at submission (:func:`submit`).
    """
    shards = list(range(plan.n_shards)) if shards is None else list(shards)
    if not shards:
        raise ValueError("no shards to run")
    bad = [i for i in shards if not 0 <= i < plan.n_shards]
    if bad:
        raise ValueError(f"shard indices {bad} not in [0, {plan.n_shards})")
    plan_path = str(Path(plan_path).resolve())
    base = [plan.python, "-m", "specclass", "slurm"]
    logs = Path(plan.shard_dir)
    array_spec = spec.merged({
        "array": _array_range(shards),
        "job_name": spec.job_name or "specclass-shards",
        "output": str(logs / "shard-%A_%a.out"),
        "error": None,
    })
    array_spec.error = None
    array_cmd = shlex.join(base + ["run-shard", plan_path]) + ' --index "$SLURM_ARRAY_TASK_ID"'
    merge_spec = spec.merged({
        "job_name": (spec.job_name or "specclass") + "-merge",
        "output": str(logs / "merge-%j.out"),
    })
    merge_spec.error = None
    merge_spec.array = None
    merge_cmd = shlex.join(base + ["merge-shards", plan_path])
    what = "prediction" if plan.kind == "predict" else "dataset"
    return (slurm.render_script(array_spec, array_cmd, header_comment=f"{what} shards of {plan.out}"),
            slurm.render_script(merge_spec, merge_cmd, header_comment=f"merge shards into {plan.out}"))


def submit(plan_path: str | os.PathLike, spec: JobSpec, shards: Sequence[int] | None = None,
           env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Submit the shard array and the merge job (``afterok`` on the array); record both in the plan.

    A still-pending merge job of an earlier submission of this plan is cancelled
    first (its dependency failed, so it would never run).

    Returns:
        ``(array job id, merge job id)``.

    Raises:
        SlurmError: sbatch refused a job.
    """
    plan_path = Path(plan_path)
    plan = ArrayPlan.load(plan_path)
    Path(plan.shard_dir).mkdir(parents=True, exist_ok=True)
    for old in plan.jobs:
        rows = slurm.status([old["merge"]], env=env) if old.get("merge") else []
        if any(not r.finished for r in rows):
            slurm.cancel(old["merge"], env=env)
    array_script, merge_script = render_scripts(plan_path, plan, spec, shards)
    array_id = slurm.submit(array_script, env=env)
    try:
        merge_id = slurm.submit(merge_script, sbatch_args=[f"--dependency=afterok:{array_id}"], env=env)
    except slurm.SlurmError:
        slurm.cancel(array_id, env=env)
        raise
    plan.jobs.append({"array": array_id, "merge": merge_id,
                      "shards": _array_range(shards if shards is not None else range(plan.n_shards))})
    plan.save(plan_path)
    return array_id, merge_id
