"""``specclass train | evaluate | predict | models``: train on a dataset file, score it, classify files.

::

    specclass models
    specclass train DATASET --model spectral_tutorial --epochs 30 --batch-size 64 --out RUN
    specclass train DATASET --out RUN --ensemble 5        # 5 members, seeds 42..46 (specclass.ensemble)
    specclass evaluate RUN DATASET --split test
    specclass predict [RUN] FILES_OR_DIRS... --out predictions.csv [--uncertain-below 0.5] [--no-calibration]

``train`` resumes: run the same command again on the same ``--out`` and it
continues from the last finished epoch (see :mod:`specclass.training`). Under
SLURM it catches the warning signal / SIGTERM, saves, and exits with status 75
(:mod:`specclass.cluster.signals`); devices follow ``--strategy``
(:mod:`specclass.cluster.distribute`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from specclass.cli import CLIError
from specclass.commands.argtypes import non_negative_int, positive_int, probability

log = logging.getLogger(__name__)

SAVE_FORMATS = ("keras", "h5", "json")


def _formats(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in SAVE_FORMATS]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"--save-formats {text!r}: allowed (comma-separated): {', '.join(SAVE_FORMATS)}"
        )
    return items


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"--model-option {text!r}: expected KEY=VALUE (VALUE as JSON, or a string)")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate``, ``predict`` and ``models`` to the ``specclass`` parser."""
    from specclass.models import DEFAULT_MODEL
    from specclass.pretrained import DEFAULT_SCHEME as PRETRAINED_DEFAULT, SCHEMES as PRETRAINED_SCHEMES
    from specclass.preprocessing import NORMALISATIONS

    p = subparsers.add_parser(
        "train", help="train a model on a dataset file and write a run folder (resumable)",
        description="Train a registered model on the train split of DATASET, validating on its val split; "
                    "write the run folder OUT. Re-running the same command continues from the last finished epoch.",
    )
    p.add_argument("dataset", type=Path, help="dataset file (.h5 or .npz) from 'specclass build-dataset' or 'simulate'")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model name (default {DEFAULT_MODEL}; "
                   "'specclass models' lists them)")
    p.add_argument("--epochs", type=positive_int, default=20, help="total epochs (default 20)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="global batch size (default 64, as the benchmarks)")
    p.add_argument("--out", type=Path, required=True, help="run folder to write (or resume)")
    p.add_argument("--n-sim-per-class", type=non_negative_int, default=None, metavar="N",
                   help="simulated spectra per class added to the training split only, labelled by the emulated "
                        "SDSS pipeline; validation and test stay real (default 1500 for seed4/class3 datasets on the "
                        "simulator's grid, else 0; 0 = real spectra only)")
    p.add_argument("--sim-labels", choices=("pipeline", "construction"), default="pipeline",
                   help="labels of the simulated spectra: the emulated pipeline's decision (default) or what was built")
    p.add_argument("--seed", type=int, default=42, help="random seed (weights, shuffling, augmentation; default 42)")
    p.add_argument("--ensemble", type=positive_int, metavar="K",
                   help="train K members with seeds SEED, SEED+1, ... (same data and recipe) into OUT/members/seedS/ "
                        "and write OUT/ensemble.json; predict/evaluate OUT combine them (geometric mean of the "
                        "members' calibrated probabilities); re-running continues the unfinished members")
    p.add_argument("--early-stopping", type=non_negative_int, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without improvement of --monitor")
    p.add_argument("--monitor", choices=("val_loss", "val_balanced_accuracy", "val_accuracy"),
                   default="val_balanced_accuracy",
                   help="what the best checkpoint and early stopping follow (default val_balanced_accuracy)")
    p.add_argument("--no-class-weight", action="store_true", help="do not weight classes by inverse frequency")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="do not augment the training spectra (default: augment: flux scaling, noise from ivar, "
                        "masked chunks, pixel shifts)")
    p.add_argument("--augment", dest="augment", action="store_true", default=True, help=argparse.SUPPRESS)
    p.add_argument("--channels", type=int, choices=(1, 2), help="1 = flux; 2 = flux + good-pixel weight")
    p.add_argument("--normalisation", choices=NORMALISATIONS, default="robust",
                   help="per-spectrum normalisation over good pixels (default robust: median / IQR)")
    p.add_argument("--model-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="builder option, VALUE as JSON (e.g. filters=[16,32,64], dropout=0.2); repeatable")
    p.add_argument("--save-formats", type=_formats, default=["keras"], metavar="LIST",
                   help="model files to write: comma-separated of keras,h5,json (default keras)")
    p.add_argument("--strategy", default="auto",
                   help="device strategy: auto (default), none, mirrored, data-parallel, multi-node")
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    p.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                   help="read batches from the .h5 file instead of loading it (memory independent of its size); "
                        "auto (default): when flux + ivar exceed 2 GiB")
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser(
        "evaluate", help="score a run on a dataset split; write metrics, plots and report.html",
        description="Evaluate the run folder RUN on one split of DATASET (accuracy, balanced accuracy, per-class "
                    "precision/recall/F1, confusion matrix, ZWARNING and source breakdowns, misclassified list).",
    )
    e.add_argument("run", type=Path, help="run folder written by 'specclass train' (or an ensemble folder)")
    e.add_argument("dataset", type=Path, help="dataset file on the run's grid")
    e.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                   help="default test; other splits write metrics-SPLIT.json, report-SPLIT.html, ... so the "
                        "test outputs are never overwritten")
    _calibration_options(e)
    _pipeline_rule_option(e)
    e.set_defaults(func=cmd_evaluate)

    r = subparsers.add_parser(
        "predict", help="classify spectrum files with a run folder; write a CSV",
        description="Classify every spectrum in FILES_OR_DIRS (any format specclass reads) with the run's model "
                    "and its saved preprocessing; one CSV row per spectrum, with a reason for each failure. "
                    "Without RUN, the pretrained classifier packaged with specclass is used.",
        usage="specclass predict [options] [RUN] FILES_OR_DIRS [FILES_OR_DIRS ...]",
    )
    r.add_argument("paths", nargs="+", type=Path, metavar="[RUN] FILES_OR_DIRS",
                   help="optional run folder written by 'specclass train' (or a model.numpy.h5 / model.onnx from "
                        "'specclass export'), then spectrum files or folders; without a run folder the pretrained "
                        "classifier packaged with specclass is used (see --pretrained)")
    r.add_argument("--pretrained", choices=PRETRAINED_SCHEMES, default=PRETRAINED_DEFAULT,
                   help=f"label scheme of the packaged classifier used when no run folder is given "
                        f"(default {PRETRAINED_DEFAULT})")
    r.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write (default predictions.csv)")
    r.add_argument("--spectro1d", action="store_true",
                   help="also run the emulated SDSS pipeline on each spectrum (specclass.spectro1d: its CLASS, "
                        "SUBCLASS, Z beside the network's; 0.03-0.3 s per spectrum)")
    r.add_argument("--format", choices=SAVE_FORMATS, default="keras", help="model file to load (default keras)")
    r.add_argument("--batch-size", type=positive_int, default=256, help="prediction batch size (default 256)")
    r.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="processes, each classifying a contiguous block of the files (default: the cores SLURM or "
                        "the machine gives this process); the CSV is the same for any N")
    _calibration_options(r)
    _pipeline_rule_option(r)
    r.set_defaults(func=cmd_predict)

    m = subparsers.add_parser("models", help="list the registered models and their options")
    m.set_defaults(func=cmd_models)


def _pipeline_rule_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-pipeline-rule", "--no-line-rule", dest="pipeline_rule", action="store_false",
                        default=None,
                        help="keep the network's own probabilities. By default, runs with GALAXY and QSO or AGN on "
                             "SDSS's 1e-4 dex pixels get the SDSS pipeline's decisions on top of the network: for a "
                             "spectrum the network puts in the galaxy family (P(GALAXY) + P(AGN), weighed as one) or "
                             "the QSO family, it becomes a STAR when the star templates fit better than the GALAXY and "
                             "QSO eigenspectra by the pipeline's 0.01 chi2/dof margin, else GALAXY vs QSO is decided by "
                             "the GALAXY/QSO fits when they differ by that margin (a narrow-line AGN called a galaxy "
                             "stays one), and for seed4 AGN vs GALAXY by the pipeline's BPT rule on the measured "
                             "emission lines (README \"The SDSS pipeline's own decisions on top of the network\"; "
                             "0.02-0.05 s per such spectrum; --no-line-rule is the old name)")


def _calibration_options(parser: argparse.ArgumentParser) -> None:
    from specclass.calibration import DEFAULT_UNCERTAIN_BELOW

    parser.add_argument("--uncertain-below", type=probability, default=DEFAULT_UNCERTAIN_BELOW, metavar="P",
                        help="flag a spectrum uncertain when its top (calibrated) probability is below P, in [0, 1] "
                             f"(default {DEFAULT_UNCERTAIN_BELOW}: the predicted class is then more likely wrong "
                             "than right; 0 flags nothing); the predicted class stays the most probable one")
    parser.add_argument("--no-calibration", action="store_true",
                        help="use the network's raw softmax, not the temperature of the run's calibration.json")


def cmd_models(args: argparse.Namespace) -> int:
    """Print every built-in model, its summary and options (read from the source: no Keras import)."""
    from specclass.models import DEFAULT_MODEL, describe_builtin_models

    for name, (summary, options) in describe_builtin_models().items():
        mark = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{mark}: {summary}")
        if options:
            opts = ", ".join(f"{k}={v!r}" for k, v in options.items())
            print(f"    options: {opts}")
    return 0


def _with_simulated(path: Path, n_rows: int, attrs: dict, args: argparse.Namespace):
    """What ``train`` gets: ``path`` itself, or the dataset loaded with ``--n-sim-per-class``
    simulated spectra added to its training split (see the option's help).

    The default adds them to seed4/class3 datasets of real spectra on the simulator's grid
    with up to :data:`SIM_DEFAULT_MAX_ROWS` rows (beyond that they are a negligible share and
    the file may be streamed; an explicit ``--n-sim-per-class`` on a streamed run is an error).
    """
    import numpy as np

    from specclass.simulate.mix import DEFAULT_N_SIM_PER_CLASS, add_simulated_to_train
    from specclass.spectra.dataset import SpectralDataset
    from specclass.spectra.grid import LogLamGrid

    n = args.n_sim_per_class
    if n == 0:
        return path
    if args.stream == "on" or n_rows > SIM_DEFAULT_MAX_ROWS:
        if n is not None:
            raise CLIError(f"--n-sim-per-class {n}: simulated spectra are added in memory; with "
                           f"{'--stream on' if args.stream == 'on' else f'{n_rows} rows'} train on the file alone "
                           "(--n-sim-per-class 0) or add them with 'specclass simulate' and merge the files")
        print(f"no simulated spectra added ({n_rows} rows: the file is large enough); --n-sim-per-class N to choose",
              flush=True)
        return path
    dataset = SpectralDataset.load(path)
    if n is None:  # the default: add them where the simulator can make them
        grid = LogLamGrid().loglam
        same_grid = dataset.loglam.shape == grid.shape and np.allclose(dataset.loglam, grid, rtol=0, atol=1e-7)
        scheme = dataset.attrs.get("label_scheme")
        real = not (np.asarray(dataset.meta["source"]) == "simulated").all()
        if not (same_grid and scheme in ("seed4", "class3") and real):
            why = ("the dataset is simulated" if not real else f"label scheme {scheme!r}" if scheme not in ("seed4", "class3")
                   else "the dataset is not on the simulator's grid")
            print(f"no simulated spectra added ({why}); --n-sim-per-class N to choose", flush=True)
            return path
        n = DEFAULT_N_SIM_PER_CLASS
    print(f"adding {n} simulated spectra per class to the training split ({args.sim_labels} labels; "
          "the pipeline labels are cached after the first run) ...", flush=True)
    try:
        out = add_simulated_to_train(dataset, n, seed=args.seed, label_source=args.sim_labels)
    except ValueError as exc:
        raise CLIError(f"--n-sim-per-class {n}: {exc}") from None
    counts = out.attrs["simulated_in_train"]["per_class"]
    print("simulated in train: " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
    return out


#: Datasets with more rows than this get no simulated spectra by default (see _with_simulated).
SIM_DEFAULT_MAX_ROWS = 50_000


def cmd_train(args: argparse.Namespace) -> int:
    """``specclass train``."""
    from specclass.models import UnknownModelError, model_spec

    if not args.dataset.is_file():
        raise CLIError(f"{args.dataset}: no such dataset file")
    try:
        spec = model_spec(args.model)
    except UnknownModelError as exc:
        raise CLIError(str(exc)) from None
    options = dict(args.model_option)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise CLIError(f"--model-option {', '.join(unknown)}: model {args.model!r} takes "
                       f"{', '.join(spec.options) or 'no options'}")

    from specclass.cluster.distribute import STRATEGIES, get_strategy
    from specclass.spectra.dataset import DatasetFormatError, SpectralDataset

    if args.strategy not in STRATEGIES:
        raise CLIError(f"--strategy {args.strategy!r}: allowed {', '.join(STRATEGIES)}")
    try:
        strategy = get_strategy(args.strategy)
    except ValueError as exc:
        raise CLIError(f"--strategy {args.strategy}: {exc}") from None
    try:
        n_rows, attrs = SpectralDataset.peek(args.dataset)  # train() loads or streams the file
    except DatasetFormatError as exc:
        raise CLIError(str(exc)) from None
    source = _with_simulated(args.dataset, n_rows, attrs, args)
    n_rows = n_rows if source is args.dataset else len(source)
    if args.ensemble:
        from specclass.commands.ensemble import train_ensemble

        dataset = source if source is not args.dataset else SpectralDataset.load(args.dataset)
        return train_ensemble(args, dataset, lambda out, seed: _train_one(args, dataset, out, seed, strategy, options))
    print(f"training {args.model} on {args.dataset} ({n_rows} rows, classes {attrs['class_names']}) "
          f"-> {args.out}  [{strategy.describe()}]", flush=True)
    _train_one(args, source, args.out, args.seed, strategy, options)
    print(f"next: specclass evaluate {args.out} {args.dataset}")
    return 0


def _train_one(args: argparse.Namespace, dataset: Any, out: Path, seed: int, strategy: Any,
               options: dict[str, Any]) -> Any:
    """Train (or resume) one run folder ``out`` with ``seed`` and print its summary; return the ``RunResult``."""
    from specclass.cluster.signals import slurm_callbacks
    from specclass.training import ResumeMismatchError, train

    try:
        result = train(
            dataset, args.model, out,
            epochs=args.epochs, batch_size=args.batch_size, seed=seed,
            class_weight=None if args.no_class_weight else "balanced",
            early_stopping=args.early_stopping,
            augment=bool(args.augment),
            extra_callbacks=slurm_callbacks(),
            strategy=strategy,
            monitor=args.monitor,
            model_options=options,
            normalisation=args.normalisation,
            channels=args.channels,
            save_formats=args.save_formats,
            verbose=2 if args.quiet else "auto",
            stream={"auto": None, "on": True, "off": False}[args.stream],
        )
    except ResumeMismatchError as exc:
        raise CLIError(str(exc)) from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    cfg = result.config
    if result.initial_epoch:
        print(f"resumed from epoch {result.initial_epoch}")
    best = "n/a" if result.best_score is None else f"{result.best_score:.4f}"
    best_epoch = "n/a" if result.best_epoch is None else result.best_epoch + 1
    print(f"done: {result.epochs_done} epochs; best {result.monitor} {best} at epoch {best_epoch}"
          f"{' (stopped early)' if cfg.get('stopped_early') else ''}")
    print(f"device: {cfg['device']['backend']} {', '.join(cfg['device']['devices'])}")
    if result.calibration is not None:
        print(f"calibration (temperature scaling on the val split): {result.calibration.summary()}")
    for role, path in sorted(result.files.items()):
        print(f"  {role:14s} {path}")
    return result


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``specclass evaluate``."""
    from specclass.evaluation import evaluate_run
    from specclass.persistence import RunFolderError

    if not args.dataset.is_file():
        raise CLIError(f"{args.dataset}: no such dataset file")
    try:
        metrics = evaluate_run(args.run, args.dataset, args.split, calibrate=not args.no_calibration,
                               uncertain_below=args.uncertain_below, pipeline_rule=args.pipeline_rule)
    except (RunFolderError, FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    print(f"{args.run} on {args.dataset} [{args.split}]: n={metrics['n']} "
          f"accuracy={metrics['accuracy']:.4f} balanced_accuracy={metrics['balanced_accuracy']:.4f}")
    for row in metrics["per_class"]:
        flag = "  (few examples)" if row.get("small") else ""
        print(f"  {row['name']:10s} recall={row['recall']:.3f} precision={row['precision']:.3f} "
              f"support={row['support']}{flag}")
    rule = metrics.get("pipeline_rule")
    if rule:
        print(f"  SDSS pipeline rule: STAR or GALAXY vs QSO decided by template fits for {rule['template_decided']}, lines "
              f"measured for {rule['measured']}, {rule['changed']} network labels changed (network alone: accuracy "
              f"{rule['network_accuracy']:.4f}, balanced accuracy {rule['network_balanced_accuracy']:.4f}; "
              f"--no-pipeline-rule to score it)")
    cal = metrics.get("calibration") or {}
    if cal:
        sel = cal.get("selective") or {}

        def f(v: Any) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        print(f"  calibration{' (the network alone, before the pipeline rule)' if rule else ''}: "
              f"{cal.get('probabilities')}; ECE raw {f(cal.get('ece_raw'))} -> "
              f"calibrated {f(cal.get('ece_calibrated'))}")
        print(f"  uncertain below {cal.get('uncertain_below'):g}{' (the network alone)' if rule else ''}: "
              f"{sel.get('n_uncertain')} of {sel.get('n')}; "
              f"coverage {f(sel.get('coverage'))}, accuracy {f(sel.get('accuracy'))}, balanced accuracy "
              f"{f(sel.get('balanced_accuracy'))} on the covered rows")
    for role, path in metrics.get("files", {}).items():
        print(f"  {role}: {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``specclass predict``."""
    from collections import Counter

    from specclass.inference.load import load_any_run
    from specclass.parallel import check_workers
    from specclass.persistence import RunFolderError
    from specclass.predict import run_temperature
    from specclass.predict_shards import predict_files_parallel
    from specclass.pretrained import NoPretrainedError, require_pretrained, split_run_argument

    args.run, args.paths = split_run_argument(args.paths)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise CLIError(f"no such file or folder: {', '.join(missing)}")
    if not args.paths:
        raise CLIError(f"{args.run} is the run; give the spectrum files or folders to classify after it")
    if args.run is None:
        try:
            args.run = require_pretrained(args.pretrained)
        except NoPretrainedError as exc:
            raise CLIError(str(exc)) from None
        print(f"no run folder given: using the pretrained {args.pretrained} classifier packaged with specclass "
              f"({args.run}; model card: {args.run / 'MODEL_CARD.md'})")
    try:
        run = load_any_run(args.run, fmt=args.format)
    except RunFolderError as exc:
        raise CLIError(str(exc)) from None
    _, how = run_temperature(run, not args.no_calibration)
    print(f"probabilities: {how}")
    not_spectra: list[tuple[Path, str]] = []
    rows, failures = predict_files_parallel(run, args.paths, out=args.out, batch_size=args.batch_size,
                                            calibrate=not args.no_calibration, uncertain_below=args.uncertain_below,
                                            fmt=args.format, workers=check_workers(args.workers), skipped=not_spectra,
                                            pipeline_rule=args.pipeline_rule,
                                            **({"spectro1d": True} if args.spectro1d else {}))
    counts = Counter(r["predicted_class"] for r in rows)
    ruled = [r for r in rows if "network_class" in r]
    if ruled:
        changed = sum(r["network_class"] != r["predicted_class"] for r in ruled)
        print(f"SDSS pipeline rule (STAR and GALAXY vs QSO by template fits, AGN vs GALAXY by the measured lines where "
              f"the run has AGN; --no-pipeline-rule: the network's own): {changed} of {len(ruled)} network labels "
              f"changed (columns network_class, template_class, line_subclass)")
    if args.spectro1d and rows:
        agree = sum(r["spectro1d_label"] == r["predicted_class"] for r in rows)
        print(f"emulated SDSS pipeline (spectro1d): agrees with the network on {agree} of {len(rows)}")
    n_unsure = sum(r["uncertain"] for r in rows)
    print(f"classified {len(rows)} {'spectrum' if len(rows) == 1 else 'spectra'} ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items())) or 'none'}); "
          f"{len(failures)} not classified -> {args.out}")
    if rows:
        print(f"uncertain (top probability < {args.uncertain_below:g}): {n_unsure} of {len(rows)} "
              "(column 'uncertain' = 1; predicted_class is still the most probable class)")
    if not_spectra:
        names = ", ".join(p.name for p, _ in not_spectra[:5]) + (", ..." if len(not_spectra) > 5 else "")
        print(f"left out {len(not_spectra)} file(s) in the folders that are not spectra ({names})")
    for fail in failures[:10]:
        print(f"  skipped {fail['file']}: {fail['reason']}")
    if len(failures) > 10:
        print(f"  ... and {len(failures) - 10} more (see {args.out})")
    if not rows:
        why = (f"all {len(failures)} spectrum file(s) failed (reasons above)" if failures
               else "no spectrum file found in " + ", ".join(map(str, args.paths)))
        raise CLIError(f"nothing classified: {why}"
                       + (f"; {len(not_spectra)} non-spectrum file(s) left out" if not_spectra else ""))
    return 0
