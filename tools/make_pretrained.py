"""Make the pretrained classifier packaged in ``src/specclass/pretrained/<scheme>/`` (developers only).

Run from the repository root::

    .venv/bin/python tools/make_pretrained.py DATASET.h5 [--scheme seed4] [--workdir build/pretrained] \
        [-- EXTRA 'specclass train' OPTIONS]

What it does, with the default recipe (``specclass train`` defaults; anything after
``--`` is passed to ``specclass train`` unchanged, so a recipe change is one flag):

1. ``specclass train DATASET --out WORKDIR/<scheme>`` (resumes if interrupted);
2. ``specclass evaluate WORKDIR/<scheme> DATASET --split test`` (``metrics.json``);
3. ``specclass export WORKDIR/<scheme> --format numpy`` (``model.numpy.h5``, for
   ``specclass predict`` without TensorFlow);
4. writes ``MODEL_CARD.md`` from the run's ``config.json``, ``metrics.json``,
   ``calibration.json`` and the dataset's metadata (counts per class and source);
   the sections that need a person (cross-validated figures, known weaknesses)
   are marked ``TODO``;
5. copies the small files a user needs (:data:`SHIPPED`) to
   ``src/specclass/pretrained/<scheme>/`` (``--dest``), replacing what was there.

``DATASET`` must be labelled with ``<scheme>`` (``specclass build-dataset --labels <scheme>``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from specclass.pretrained import SCHEMES  # noqa: E402

#: Files of the run folder that are packaged (training checkpoints, plots and history stay behind).
#: Files copied into the package: the numpy export only (1.5 MB for spectral_tutorial, where
#: model.keras with its optimizer state is 4.6 MB); ``specclass predict`` runs a folder without
#: model.keras through the numpy predictor (no TensorFlow needed). The Keras run stays in --workdir.
SHIPPED = ("model.numpy.h5", "preprocessing.json", "calibration.json", "config.json",
           "metrics.json", "MODEL_CARD.md")


def portable_paths(obj: Any, run: Path) -> Any:
    """``obj`` (parsed JSON) with no absolute machine path left: paths inside the run folder become
    their name, spectrum files of the shared data ``sdss/...`` (the part from the survey folder on),
    any other absolute path its file name. A packaged file must not name the machine it was made on.
    """
    if isinstance(obj, dict):
        return {k: portable_paths(v, run) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable_paths(v, run) for v in obj]
    if isinstance(obj, str) and obj.startswith("/") and len(obj) > 1:
        p = Path(obj)
        try:
            return str(p.relative_to(run))
        except ValueError:
            pass
        parts = p.parts
        for survey in ("sdss", "other_surveys"):
            if survey in parts:
                return str(Path(*parts[parts.index(survey):]))
        return p.name
    return obj


def _write_portable_json(src: Path, dst: Path, run: Path) -> None:
    data = json.loads(src.read_text(encoding="utf-8"))
    dst.write_text(json.dumps(portable_paths(data, run), indent=1) + "\n", encoding="utf-8")


def _cli(*argv: str) -> None:
    from specclass.cli import main

    print("$ specclass", " ".join(argv), flush=True)
    code = main(list(argv))
    if code:
        raise SystemExit(f"specclass {argv[0]} failed (exit {code})")


def _fmt(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _counts_table(dataset_path: Path) -> tuple[str, dict[str, int]]:
    """Markdown table of spectra per class x source x split, and the class totals."""
    import numpy as np

    from specclass.spectra.dataset import SpectralDataset

    ds = SpectralDataset.load(dataset_path)
    names = list(ds.class_names)
    split_names = {0: "train", 1: "val", 2: "test"}
    cells: Counter = Counter()
    for lab, src, split in zip(ds.labels, ds.meta["source"], ds.meta["split"]):
        if lab >= 0:
            cells[(names[int(lab)], str(src), split_names.get(int(split), "unassigned"))] += 1
    sources = sorted({k[1] for k in cells})
    lines = ["| class | source | train | val | test |", "| --- | --- | ---: | ---: | ---: |"]
    for c in names:
        for s in sources:
            row = [cells[(c, s, sp)] for sp in ("train", "val", "test")]
            if any(row):
                lines.append(f"| {c} | {s} | " + " | ".join(map(str, row)) + " |")
    totals = {c: int(np.sum(ds.labels == i)) for i, c in enumerate(names)}
    return "\n".join(lines), totals


def model_card(run: Path, dataset: Path, scheme: str, train_args: list[str]) -> str:
    """``MODEL_CARD.md`` text for the run folder ``run`` (see the module docstring)."""
    cfg = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    cal = json.loads((run / "calibration.json").read_text()) if (run / "calibration.json").is_file() else {}
    table, totals = _counts_table(dataset)
    per_class = "\n".join(
        f"| {r['name']} | {_fmt(r.get('recall'))} | {_fmt(r.get('precision'))} | {_fmt(r.get('f1'))} | {r.get('support')} |"
        for r in metrics.get("per_class", [])
    )
    if cal and not cal.get("fitted", True):
        probs = (f"Probabilities are the raw softmax: no temperature could be fitted on the validation split "
                 f"({cal.get('reason', 'no reason recorded')})")
    else:
        probs = "Probabilities are temperature-calibrated"
    command = " ".join(["python tools/make_pretrained.py", dataset.name, "--scheme", scheme,
                        *(["--", *train_args] if train_args else [])])
    from specclass.pipeline_rule import STAR_OVERTURN_RATIO

    names = cfg.get("class_names", [])
    rule = ("" if not ("GALAXY" in names and ({"QSO", "AGN"} & set(names))) else
            "\nOn SDSS's 1e-4 dex pixels `predict`/`evaluate` apply the SDSS pipeline's own decisions on top of the\n"
            "network (`specclass.pipeline_rule`): STAR when the star templates fit better than the GALAXY and QSO\n"
            "eigenspectra, else GALAXY vs QSO by those fits, when chi2/dof differs by at least the pipeline's 0.01 margin"
            + (", AGN vs GALAXY by the BPT rule on the measured emission lines" if "AGN" in names else "")
            + f";\na network STAR call gives way only to a GALAXY or QSO fit {STAR_OVERTURN_RATIO:g} times better in chi2/dof, "
            "or better by the 0.01 margin with emission lines no star shows: the four BPT lines or broad lines"
            + " (columns\n`network_class`, `template_class`, `line_subclass`; `--no-pipeline-rule` gives the network's own call).")
    pr = metrics.get("pipeline_rule") or {}
    network = ("" if not pr else
               f" (with the SDSS pipeline rule that `predict` applies, {pr.get('changed')} labels changed; the "
               f"network alone: accuracy {_fmt(pr.get('network_accuracy'))}, balanced accuracy "
               f"{_fmt(pr.get('network_balanced_accuracy'))})")
    return f"""# specclass pretrained classifier: {scheme}

Made {datetime.now(timezone.utc):%Y-%m-%d} by `{command}` (specclass {cfg.get('specclass_version')},
Keras {cfg.get('keras_version')}, backend {cfg.get('device', {}).get('backend')}).

## Intended use
Classify optical spectra (SDSS/BOSS, LAMOST, DESI, text tables: anything `specclass predict`
reads) into {', '.join(cfg.get('class_names', []))}: `specclass predict FILES` uses this
classifier when no run folder is given. {probs}; rows with
`uncertain = 1` (top probability < 0.5) are more likely wrong than right.{rule}

## Data
Dataset `{dataset.name}` (label scheme `{cfg.get('dataset', {}).get('label_scheme')}`,
{sum(totals.values())} labelled spectra: {', '.join(f'{k} {v}' for k, v in totals.items())}).
Spectra per class, source and split:

{table}

## Recipe
- network: `{cfg.get('model')}` {json.dumps(cfg.get('model_options') or {})}, {cfg.get('model_summary', {}).get('params')} parameters, input {cfg.get('model_summary', {}).get('input_shape')}
- preprocessing: {json.dumps(cfg.get('preprocessing'))} (`preprocessing.json`)
- training: {cfg.get('epochs')} epochs, batch {cfg.get('batch_size')}, seed {cfg.get('seed')}, monitor `{cfg.get('monitor')}`, early stopping {cfg.get('early_stopping_patience')}, class weight `{cfg.get('class_weight_mode')}`, augmentation {json.dumps(cfg.get('augmentation'))}
- `specclass train` options beyond the defaults: `{' '.join(train_args) or 'none'}`
- best epoch {_fmt(cfg['best_epoch'] + 1 if isinstance(cfg.get('best_epoch'), int) else None)} (counted from 1), best {cfg.get('monitor')} {_fmt(cfg.get('best_score'), 4)}

## Figures (test split of the dataset, one split)
accuracy {_fmt(metrics.get('accuracy'))}, balanced accuracy {_fmt(metrics.get('balanced_accuracy'))}, n = {metrics.get('n')}{network}

| class | recall | precision | F1 | support |
| --- | ---: | ---: | ---: | ---: |
{per_class}

Calibration (validation split): T = {_fmt(cal.get('temperature'))}, ECE {_fmt(cal.get('ece_before'))} -> {_fmt(cal.get('ece_after'))}, NLL {_fmt(cal.get('nll_before'))} -> {_fmt(cal.get('nll_after'))}.

## Cross-validated figures
TODO: out-of-fold accuracy / balanced accuracy per class and per source
(`benchmarks/accuracy.py --folds 5` with this recipe); one test split of a few hundred
spectra is noisy.

## Known weaknesses
TODO: fill from the cross-validation (classes and sources with low recall, e.g. AGN vs
GALAXY, LAMOST/DESI as out-of-survey input, grid coverage 3802-9120 Å only).

## Files
{', '.join(f'`{f}`' for f in SHIPPED)}; `model.numpy.h5` runs without TensorFlow
(`specclass predict` picks it when Keras is not installed).
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="labelled dataset file from 'specclass build-dataset'")
    parser.add_argument("--scheme", choices=SCHEMES, default="seed4", help="label scheme (default seed4)")
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "pretrained",
                        help="where the full run folder is trained (default build/pretrained)")
    parser.add_argument("--dest", type=Path, default=None,
                        help="packaged folder (default src/specclass/pretrained/SCHEME)")
    args = parser.parse_args(argv)

    from specclass.spectra.dataset import SpectralDataset

    if not args.dataset.is_file():
        parser.error(f"{args.dataset}: no such dataset file")
    got = SpectralDataset.load(args.dataset).attrs.get("label_scheme")
    if got != args.scheme:
        parser.error(f"{args.dataset} is labelled with scheme {got!r}, not {args.scheme!r} "
                     f"(build it with 'specclass build-dataset ... --labels {args.scheme}')")
    run = args.workdir / args.scheme
    _cli("train", str(args.dataset), "--out", str(run), "--quiet", *train_args)
    _cli("evaluate", str(run), str(args.dataset), "--split", "test")
    _cli("export", str(run), "--format", "numpy")
    (run / "MODEL_CARD.md").write_text(model_card(run, args.dataset, args.scheme, train_args), encoding="utf-8")
    dest = args.dest or REPO / "src" / "specclass" / "pretrained" / args.scheme
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in SHIPPED:
        if (run / name).is_file():
            if name.endswith(".json"):
                _write_portable_json(run / name, dest / name, run)
            else:
                shutil.copyfile(run / name, dest / name)
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(f"packaged {dest} ({size / 1024:.0f} KiB): {', '.join(sorted(p.name for p in dest.iterdir()))}")
    print(f"review {dest / 'MODEL_CARD.md'} (TODO sections), then: specclass predict SPECTRA --pretrained {args.scheme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
