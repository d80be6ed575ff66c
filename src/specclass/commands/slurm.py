"""``specclass slurm …``: job scripts, submit/status/cancel, dataset builds as job arrays.

Sub-commands::

    specclass slurm script   [JOB OPTIONS] -- COMMAND …   print an sbatch script
    specclass slurm submit   [JOB OPTIONS] -- COMMAND …   submit it, print the job id
    specclass slurm status   [JOBID …] [--wait]           squeue, then sacct / scontrol
    specclass slurm cancel   JOBID [--signal USR1 --batch]
    specclass slurm profiles                               list the shipped site profiles
    specclass slurm build-dataset-array INPUT … --out DS --n-shards N [JOB OPTIONS]
    specclass slurm build-dataset-array --plan PLAN --only-shards missing|3,5
    specclass slurm predict-array RUN INPUT … --out CSV --n-shards N [JOB OPTIONS]
    specclass slurm predict-array --plan PLAN --only-shards missing|3,5
    specclass slurm run-shard PLAN --index I               (what one array task runs)
    specclass slurm merge-shards PLAN                      (what the merge job runs)

``COMMAND`` is any specclass command (``train …``, ``specclass train …``), run with
``PYTHON -m specclass``, or any other shell command (``srun hostname``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from specclass.cli import CLIError

#: Warning time before the limit when ``--time`` is given and ``--signal`` is not.
DEFAULT_WARNING_S = 300


def _env_pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--env {text!r}: use NAME=VALUE")
    key, value = text.split("=", 1)
    return key, value


def _add_job_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("job options (override the profile; see sbatch(1))")
    g.add_argument("--profile", help="site profile: a TOML/JSON/INI file or a shipped name "
                   "(hamburg, hamburg-gpu, venv; `specclass slurm profiles`)")
    g.add_argument("--job-name", "-J")
    g.add_argument("--partition", "-p", help="e.g. std, big, spc, gpu")
    g.add_argument("--account", "-A")
    g.add_argument("--qos")
    g.add_argument("--constraint", "-C")
    g.add_argument("--nodes", "-N", help="nodes, or a range MIN-MAX")
    g.add_argument("--ntasks", "-n", type=int)
    g.add_argument("--ntasks-per-node", type=int)
    g.add_argument("--cpus-per-task", "-c", type=int)
    g.add_argument("--gpus-per-node", help="GPUs per node (N or TYPE:N)")
    g.add_argument("--gres", help="generic resources, e.g. gpu:2 (sites without --gpus-per-node)")
    g.add_argument("--mem", help="memory per node, e.g. 16G")
    g.add_argument("--mem-per-cpu")
    g.add_argument("--time", "-t", help="time limit: MM, HH:MM:SS, D-HH:MM …")
    g.add_argument("--mail-user")
    g.add_argument("--mail-type", help="e.g. END,FAIL or ALL")
    g.add_argument("--output", "-o", dest="job_output", help="job stdout file (%%j = job id, %%x = name)")
    g.add_argument("--error", "-e", dest="job_error", help="job stderr file")
    g.add_argument("--chdir", "-D", help="working directory of the job")
    rq = g.add_mutually_exclusive_group()
    rq.add_argument("--requeue", dest="requeue", action="store_true", default=None, help="job may be requeued")
    rq.add_argument("--no-requeue", dest="requeue", action="store_false", help="never requeue the job")
    g.add_argument("--signal", help="warning signal, e.g. B:USR1@300 (default with --time: "
                   f"B:USR1@{DEFAULT_WARNING_S}, or a tenth of the limit if shorter); 'none' for no signal")
    g.add_argument("--requeue-on-signal", action="store_true",
                   help="on the warning signal, training saves and runs `scontrol requeue` (implies --requeue)")
    g.add_argument("--dependency", "-d", help="e.g. afterok:1234")
    g.add_argument("--export", help="sbatch --export (default ALL)")
    g.add_argument("--sbatch-option", action="append", default=None, metavar="OPT",
                   help="another #SBATCH option, e.g. --exclusive (repeatable)")
    g.add_argument("--setup", action="append", default=None, metavar="LINE",
                   help="shell line run before the command, e.g. 'module load cuda' (repeatable)")
    g.add_argument("--env", action="append", default=None, type=_env_pair, metavar="NAME=VALUE",
                   help="environment variable for the job (repeatable)")
    g.add_argument("--python", help="interpreter that runs specclass in the job (default: this one, "
                   "or the profile's)")
    g.add_argument("--srun", action="store_true", default=None,
                   help="start the command with srun (one copy per task: multi-process training)")


def _spec_from_args(args: argparse.Namespace):
    from specclass.cluster.profiles import ProfileError, load_spec
    from specclass.cluster.slurm import batch_signal, parse_time

    env = dict(args.env or [])
    requeue = args.requeue
    if args.requeue_on_signal:
        env["SPECCLASS_REQUEUE"] = "1"
        requeue = True if requeue is None else requeue
    try:
        spec = load_spec(
            args.profile,
            job_name=args.job_name, partition=args.partition, account=args.account, qos=args.qos,
            constraint=args.constraint, nodes=int(args.nodes) if args.nodes and args.nodes.isdigit() else args.nodes,
            ntasks=args.ntasks, ntasks_per_node=args.ntasks_per_node, cpus_per_task=args.cpus_per_task,
            gpus_per_node=args.gpus_per_node, gres=args.gres, mem=args.mem, mem_per_cpu=args.mem_per_cpu,
            time=args.time, mail_user=args.mail_user, mail_type=args.mail_type, output=args.job_output,
            error=args.job_error, chdir=args.chdir, requeue=requeue,
            signal=None if args.signal in (None, "none") else args.signal,
            dependency=args.dependency, export=args.export, extra=args.sbatch_option, setup=args.setup,
            env=env or None, python=args.python, srun=args.srun,
        )
    except (ProfileError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    if args.signal == "none":
        spec.signal = None
    elif spec.signal is None and spec.time:
        limit = parse_time(spec.time)
        spec.signal = f"B:USR1@{max(10, min(DEFAULT_WARNING_S, limit // 10))}"
    spec.signal, note = batch_signal(spec.signal, spec.srun)
    if note:
        print(f"specclass slurm: warning: {note}", file=sys.stderr)
    return spec


def _command_words(args: argparse.Namespace) -> list[str]:
    words = list(args.job_command or [])
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise CLIError("no command given: put the command after '--', e.g. -- train --dataset d.h5 --out runs/a")
    return words


def _render(args: argparse.Namespace) -> str:
    from specclass.cluster.slurm import render_script

    spec = _spec_from_args(args)
    try:
        return render_script(spec, _command_words(args))
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def _write_atomic(path: Path, text: str) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def _cmd_script(args: argparse.Namespace) -> int:
    text = _render(args)
    if args.write:
        _write_atomic(Path(args.write), text)
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _slurm_error(exc: Exception) -> CLIError:
    return CLIError(str(exc))


def _cmd_submit(args: argparse.Namespace) -> int:
    from specclass.cluster import slurm

    if args.script:
        if args.job_command and _command_words(args):
            raise CLIError("give either --script FILE or a command after '--', not both")
        script: str | Path = Path(args.script)
        if not script.is_file():
            raise CLIError(f"--script {args.script}: no such file")
    else:
        script = _render(args)
        if args.write:
            _write_atomic(Path(args.write), script)
    try:
        answer = slurm.submit(script, test_only=args.test_only)
    except slurm.SlurmError as exc:
        raise _slurm_error(exc) from exc
    print(answer)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import getpass

    from specclass.cluster import slurm

    try:
        if args.wait:
            rows = slurm.wait(args.job_ids, timeout=args.timeout)
        else:
            rows = slurm.status(args.job_ids, user=None if args.all else getpass.getuser())
    except slurm.SlurmError as exc:
        raise _slurm_error(exc) from exc
    except TimeoutError as exc:
        raise CLIError(str(exc)) from exc
    if args.job_ids and not rows:
        raise CLIError(f"no job {', '.join(args.job_ids)} known to squeue, sacct or scontrol")
    print(f"{'JOBID':<14} {'NAME':<20} {'STATE':<12} {'TIME':>10} {'EXIT':>6}  REASON/NODES  [source]")
    for r in rows:
        print(f"{r.job_id:<14} {r.name[:20]:<20} {r.state:<12} {r.elapsed:>10} {r.exit_code:>6}  "
              f"{r.reason}  [{r.source}]")
    if args.wait:
        bad = [r for r in rows if r.state.split()[0] != "COMPLETED"]
        return 1 if bad else 0
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    from specclass.cluster import slurm

    for job in args.job_ids:
        try:
            slurm.cancel(job, signal=args.signal, batch=args.batch)
        except slurm.SlurmError as exc:
            raise _slurm_error(exc) from exc
        print(f"{'signalled' if args.signal else 'cancelled'} {job}")
    return 0


def _cmd_profiles(args: argparse.Namespace) -> int:
    from specclass.cluster.profiles import shipped_profiles

    for name, path in shipped_profiles().items():
        print(f"{name:<14} {path}")
    return 0


def _parse_shards(text: str | None, plan) -> list[int] | None:
    if text is None:
        return None
    if text == "missing":
        missing = plan.missing_shards()
        if not missing:
            raise CLIError(f"no shard is missing in {plan.shard_dir}; nothing to re-run")
        return missing
    try:
        out: list[int] = []
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-")
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        return out
    except ValueError as exc:
        raise CLIError(f"--only-shards {text!r}: use 'missing' or indices like 3,5 or 0-2") from exc


def _cmd_build_array(args: argparse.Namespace) -> int:
    from specclass.cluster import arrays, slurm

    if args.plan:
        try:
            plan = arrays.ArrayPlan.load(args.plan)
        except (OSError, ValueError) as exc:
            raise CLIError(str(exc)) from exc
        plan_path = Path(args.plan)
    else:
        if not args.inputs or not args.out or not args.n_shards:
            raise CLIError("give INPUT … --out DATASET --n-shards N (or --plan PLAN to re-run shards)")
        build = {k: v for k, v in (("labels", args.labels), ("golden", args.golden or None),
                                   ("strict", args.strict or None), ("bad_mask_bits", args.bad_mask_bits),
                                   ("text_labels", args.text_labels), ("label", args.label),
                                   ("min_good_fraction", args.min_good_fraction)) if v is not None}
        if args.text_labels:
            build["text_labels"] = str(Path(args.text_labels).resolve())
        if args.grid_min is not None or args.grid_max is not None or args.grid_step is not None:
            from specclass.spectra.grid import DEFAULT_GRID

            build["grid"] = {
                "loglam_min": DEFAULT_GRID.loglam_min if args.grid_min is None else args.grid_min,
                "loglam_max": DEFAULT_GRID.loglam_max if args.grid_max is None else args.grid_max,
                "step": DEFAULT_GRID.step if args.grid_step is None else args.grid_step,
            }
            if build["grid"]["loglam_max"] <= build["grid"]["loglam_min"]:
                raise CLIError(f"--grid-max {build['grid']['loglam_max']} must be greater than "
                               f"--grid-min {build['grid']['loglam_min']}")
        merge = {k: v for k, v in (("val_frac", args.val_frac), ("test_frac", args.test_frac),
                                   ("seed", args.seed), ("radius_arcsec", args.radius_arcsec)) if v is not None}
        try:
            plan = arrays.make_plan(args.inputs, args.out, args.n_shards, shard_dir=args.shard_dir,
                                    build_options=build, merge_options=merge, python=args.python)
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        plan_path = Path(plan.shard_dir) / "plan.json"
        plan.save(plan_path)
    return _submit_plan(args, plan, plan_path)


def _cmd_predict_array(args: argparse.Namespace) -> int:
    from specclass.cluster import arrays

    if args.plan:
        try:
            plan = arrays.ArrayPlan.load(args.plan)
        except (OSError, ValueError) as exc:
            raise CLIError(str(exc)) from exc
        if plan.kind != "predict":
            raise CLIError(f"--plan {args.plan}: a {plan.kind} plan; use `specclass slurm build-dataset-array`")
        plan_path = Path(args.plan)
    else:
        if not args.run or not args.inputs or not args.out or not args.n_shards:
            raise CLIError("give RUN INPUT … --out CSV --n-shards N (or --plan PLAN to re-run shards)")
        options = {k: v for k, v in (("batch_size", args.batch_size), ("fmt", args.format),
                                     ("uncertain_below", args.uncertain_below),
                                     ("calibrate", False if args.no_calibration else None)) if v is not None}
        try:
            plan = arrays.make_predict_plan(args.run, args.inputs, args.out, args.n_shards, shard_dir=args.shard_dir,
                                            predict_options=options, python=args.python)
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        plan_path = Path(plan.shard_dir) / "plan.json"
        plan.save(plan_path)
    return _submit_plan(args, plan, plan_path)


def _submit_plan(args: argparse.Namespace, plan, plan_path: Path) -> int:
    """Submit (or with ``--dry-run`` print) the shard array and its ``afterok`` merge job."""
    from specclass.cluster import arrays, slurm

    shards = _parse_shards(args.only_shards, plan)
    spec = _spec_from_args(args)
    try:
        if args.dry_run:
            a, m = arrays.render_scripts(plan_path, plan, spec, shards)
            print(a)
            print("# --- merge job (submitted with --dependency=afterok:<array job id>) ---")
            print(m)
            return 0
        array_id, merge_id = arrays.submit(plan_path, spec, shards)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    except slurm.SlurmError as exc:
        raise _slurm_error(exc) from exc
    print(f"plan {plan_path}")
    print(f"array job {array_id} (shards {arrays._array_range(shards or range(plan.n_shards))}), "
          f"merge job {merge_id} (afterok:{array_id}) -> {plan.out}")
    print(array_id)
    print(merge_id)
    return 0


def _cmd_run_shard(args: argparse.Namespace) -> int:
    from specclass.cluster import arrays

    try:
        plan = arrays.ArrayPlan.load(args.plan)
        arrays.run_shard(plan, args.index)
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    return 0


def _cmd_merge_shards(args: argparse.Namespace) -> int:
    from specclass.cluster import arrays

    try:
        plan = arrays.ArrayPlan.load(args.plan)
        arrays.merge(plan)
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``specclass slurm …`` to the CLI."""
    top = subparsers.add_parser("slurm", help="SLURM job scripts, submit/status/cancel, job arrays",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="slurm_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("script", help="print an sbatch script for a command")
    _add_job_options(p)
    p.add_argument("--write", "-w", metavar="FILE", help="write the script to FILE instead of stdout")
    p.add_argument("job_command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command the job runs")
    p.set_defaults(func=_cmd_script)

    p = sub.add_parser("submit", help="submit a command (or --script FILE) with sbatch; print the job id")
    _add_job_options(p)
    p.add_argument("--script", metavar="FILE", help="submit this existing script")
    p.add_argument("--write", "-w", metavar="FILE", help="also keep the rendered script in FILE")
    p.add_argument("--test-only", action="store_true",
                   help="sbatch --test-only: check the script and print when it would start")
    p.add_argument("job_command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command the job runs")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("status", help="where jobs stand (squeue, then sacct or scontrol)")
    p.add_argument("job_ids", nargs="*", metavar="JOBID")
    p.add_argument("--all", action="store_true", help="all users' queued jobs (default: yours)")
    p.add_argument("--wait", action="store_true", help="wait until the jobs have finished; exit 1 unless "
                   "all COMPLETED")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits (default 3600)")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("cancel", help="cancel jobs, or send them a signal")
    p.add_argument("job_ids", nargs="+", metavar="JOBID")
    p.add_argument("--signal", "-s", help="send this signal instead (e.g. USR1: save and stop)")
    p.add_argument("--batch", "-b", action="store_true", help="signal only the batch shell (it forwards)")
    p.set_defaults(func=_cmd_cancel)

    p = sub.add_parser("profiles", help="list the shipped site profiles")
    p.set_defaults(func=_cmd_profiles)

    p = sub.add_parser("build-dataset-array",
                       help="build a dataset as a job array (one shard per task) + an afterok merge job")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="spectrum files and/or folders")
    p.add_argument("--out", help="merged dataset file (.h5)")
    p.add_argument("--n-shards", type=int, help="number of shards = array tasks")
    p.add_argument("--shard-dir", help="folder for shards, plan and task logs (default OUT.shards/)")
    p.add_argument("--plan", help="an existing plan.json: re-submit (with --only-shards)")
    p.add_argument("--only-shards", metavar="missing|I,J",
                   help="run only these shards ('missing' = those without a file), then merge")
    p.add_argument("--labels", help="label scheme (seed4, class3, star_subclass); options below "
                   "mean what they mean for `specclass build-dataset`")
    p.add_argument("--golden", action="store_true", help="keep only ZWARNING == 0")
    p.add_argument("--strict", action="store_true", help="a shard fails at its first bad file")
    p.add_argument("--grid-min", type=float, help="first pixel, log10 A (as build-dataset)")
    p.add_argument("--grid-max", type=float, help="last pixel, log10 A")
    p.add_argument("--grid-step", type=float, help="pixel step, dex")
    p.add_argument("--bad-mask-bits", metavar="NAMES", help="and_mask bits that mask a pixel (as build-dataset)")
    p.add_argument("--radius-arcsec", type=float, help="repeat-observation match radius for the splits")
    p.add_argument("--text-labels", help="CSV of labels for text spectra")
    p.add_argument("--label", help="label for spectra without a CLASS ('STAR' or 'STAR:K7')")
    p.add_argument("--min-good-fraction", type=float)
    p.add_argument("--val-frac", type=float)
    p.add_argument("--test-frac", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--dry-run", action="store_true", help="write the plan and print both scripts; submit nothing")
    _add_job_options(p)
    p.set_defaults(func=_cmd_build_array, job_command=None)

    p = sub.add_parser("predict-array",
                       help="classify spectrum files as a job array (one block of files per task) + an afterok "
                            "merge into one CSV, the CSV of one `specclass predict`")
    p.add_argument("run", nargs="?", help="run folder written by `specclass train`")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="spectrum files and/or folders")
    p.add_argument("--out", help="merged CSV")
    p.add_argument("--n-shards", type=int, help="number of shards = array tasks")
    p.add_argument("--shard-dir", help="folder for shard CSVs, plan and task logs (default OUT.shards/)")
    p.add_argument("--plan", help="an existing plan.json: re-submit (with --only-shards)")
    p.add_argument("--only-shards", metavar="missing|I,J",
                   help="run only these shards ('missing' = those without a CSV), then merge")
    p.add_argument("--batch-size", type=int, help="prediction batch size (as `specclass predict`)")
    p.add_argument("--format", choices=("keras", "h5", "json"), help="model file to load")
    p.add_argument("--uncertain-below", type=float, metavar="P", help="as `specclass predict`")
    p.add_argument("--no-calibration", action="store_true", help="raw softmax (as `specclass predict`)")
    p.add_argument("--dry-run", action="store_true", help="write the plan and print both scripts; submit nothing")
    _add_job_options(p)
    p.set_defaults(func=_cmd_predict_array, job_command=None)

    p = sub.add_parser("run-shard", help="build one shard of a plan (what an array task runs)")
    p.add_argument("plan")
    p.add_argument("--index", type=int, required=True, help="shard index ($SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=_cmd_run_shard)

    p = sub.add_parser("merge-shards", help="merge a plan's shards into its dataset (what the merge job runs)")
    p.add_argument("plan")
    p.set_defaults(func=_cmd_merge_shards)
