"""What the benchmarks share: where the data is, what machine ran them, and how results are written.

Each benchmark script builds one report dict and a function that turns it into a
markdown table; :func:`write_report` writes ``OUT/STEM.json`` and ``OUT/STEM.md``
side by side, each atomically (:mod:`specclass.atomic`: temp file in the same folder,
fsync, rename), so an interrupted run never leaves a half-written table next to the
committed ones. ``STEM`` gets ``-quick`` for smoke runs (``--quick``), so a smoke
test never overwrites the real figures.

Used by ``benchmarks/inference.py``, ``benchmarks/training_speed.py`` and
``benchmarks/accuracy.py`` (scripts: ``benchmarks/`` is on ``sys.path`` when they run).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$SPECCLASS_SHARED_DATA`` or ``../shared/data`` next to the repository."""
    env = os.environ.get("SPECCLASS_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def command_line() -> str:
    """The command as typed, script name without its folder (``inference.py --quick``)."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def utc_now() -> str:
    """``YYYY-MM-DD HH:MM`` in UTC, the time stamp every report carries."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime())


def environment(**extra: Any) -> dict[str, Any]:
    """The settings a speed figure depends on, measured at the end of a run.

    Keys: ``TF_ENABLE_ONEDNN_OPTS`` (``specclass`` sets ``'0'`` unless the user set
    it), ``keras_backend``, ``python``, ``platform``, ``cpus`` (``os.cpu_count()``),
    ``loadavg_at_end`` (1/5/15-minute load averages, 2 decimals), then ``extra``.
    Imports keras (call it after the benchmark ran).
    """
    import keras

    return {
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "keras_backend": keras.backend.backend(),
        **extra,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def run_sentence(report: dict[str, Any]) -> str:
    """``Command: `...` (DATE UTC, N CPUs, Keras backend B, TF_ENABLE_ONEDNN_OPTS=V, load average at end L).``

    Reads ``report['command']``, ``report['date_utc']`` and ``report['environment']``
    (as made by :func:`command_line`, :func:`utc_now` and :func:`environment`).
    """
    env = report["environment"]
    return (f"Command: `{report['command']}` ({report['date_utc']} UTC, {env['cpus']} CPUs, Keras backend "
            f"{env['keras_backend']}, TF_ENABLE_ONEDNN_OPTS={env['TF_ENABLE_ONEDNN_OPTS']}, load average at end "
            f"{env['loadavg_at_end'][0]}).")


def write_report(out: Path, stem: str, report: dict[str, Any],
                 markdown: Callable[[dict[str, Any]], str]) -> tuple[Path, Path]:
    """Write ``out/stem.json`` (the report, indent 1) and ``out/stem.md`` (``markdown(report)``), each atomically.

    Creates ``out`` if needed. The markdown is rendered before anything is written, so
    a table that fails to render leaves both files as they were.

    Returns:
        ``(json_path, md_path)``.

    Raises:
        TypeError: the report holds something JSON cannot represent
            (numpy values, paths, sets and tuples are converted).
    """
    from specclass.atomic import json_default, write_text_atomic

    text_json = json.dumps(report, indent=1, default=json_default)
    text_md = markdown(report)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return (write_text_atomic(out / f"{stem}.json", text_json),
            write_text_atomic(out / f"{stem}.md", text_md))
