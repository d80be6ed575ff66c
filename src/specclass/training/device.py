"""Where a training run runs (recorded in its ``config.json``)."""

from __future__ import annotations

import os
import platform
from typing import Any


def device_info(strategy: Any = None) -> dict[str, Any]:
    """Where training runs: Keras backend, visible devices, host, CPU count, strategy.

    Returns:
        ``{"backend", "devices": [...], "host", "cpu_count", "strategy"}`` (JSON-ready).
    """
    import keras

    backend = keras.backend.backend()
    devices: list[str] = []
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            devices = [f"{d.device_type}:{d.name}" for d in tf.config.list_logical_devices()]
        elif backend == "jax":
            import jax

            devices = [str(d) for d in jax.devices()]
        elif backend == "torch":
            import torch

            devices = ["cpu"] + [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    except Exception as exc:  # never fail a run over a device listing
        devices = [f"unknown ({exc})"]
    info = {
        "backend": backend,
        "devices": devices,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    if strategy is not None:
        info["strategy"] = strategy.describe() if hasattr(strategy, "describe") else repr(strategy)
    return info
