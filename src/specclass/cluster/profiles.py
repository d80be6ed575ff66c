"""Site profiles: a cluster's usual job options and environment set-up, in one file.

A profile is a TOML, JSON or INI file whose keys are the fields of
:class:`specclass.cluster.slurm.JobSpec` (sbatch long options with ``_`` for ``-``,
plus ``setup``, ``env``, ``python``, ``srun``, ``extra``). Example (TOML)::

    partition = "std"
    nodes = 1
    time = "02:00:00"
    mail_type = "END,FAIL"
    setup = ["module load anaconda3/latest", "conda activate keras"]
    python = "python"

In an INI file the keys sit in a ``[job]`` section, list values (``setup``,
``extra``) are one item per line and ``env`` is a ``[env]`` section. Profiles shipped
with specclass (``specclass slurm profiles`` lists them) are found by name:
``hamburg`` (the tutorial's Hamburg example job), ``hamburg-gpu``, ``venv``.
"""

from __future__ import annotations

import configparser
import json
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from specclass.cluster.slurm import JobSpec

SUFFIXES = (".toml", ".json", ".ini")

_INT_KEYS = {"ntasks", "ntasks_per_node", "cpus_per_task"}
_LIST_KEYS = {"setup", "extra"}
_BOOL_KEYS = {"requeue", "srun"}


class ProfileError(ValueError):
    """A profile file is missing, unreadable or has a bad key/value (the message names the file)."""


def shipped_profiles() -> dict[str, Path]:
    """Return ``{name: path}`` of the profiles shipped in ``specclass/profiles``."""
    root = resources.files("specclass") / "profiles"
    out = {}
    for entry in root.iterdir():
        path = Path(str(entry))
        if path.suffix in SUFFIXES:
            out[path.stem] = path
    return dict(sorted(out.items()))


def find_profile(name_or_path: str | os.PathLike) -> Path:
    """Resolve a profile given as a file path or as the name of a shipped profile.

    Raises:
        ProfileError: neither a file nor a shipped profile name (lists the names).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_profiles()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    raise ProfileError(
        f"profile {str(name_or_path)!r}: no such file, and not a shipped profile ({', '.join(shipped)})"
    )


def _read_ini(path: Path) -> dict[str, Any]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep case of env names
    parser.read(path, encoding="utf-8")
    if not parser.has_section("job"):
        raise ProfileError(f"{path}: an INI profile needs a [job] section")
    data: dict[str, Any] = {}
    for key, value in parser.items("job"):
        if key in _LIST_KEYS:
            data[key] = [line.strip() for line in value.splitlines() if line.strip()]
        elif key in _BOOL_KEYS:
            try:
                data[key] = parser.getboolean("job", key)
            except ValueError as exc:
                raise ProfileError(f"{path}: [job] {key}={value!r} is not a boolean") from exc
        elif key in _INT_KEYS:
            try:
                data[key] = int(value)
            except ValueError as exc:
                raise ProfileError(f"{path}: [job] {key}={value!r} is not an integer") from exc
        elif key == "nodes" and value.strip().isdigit():
            data[key] = int(value)
        else:
            data[key] = value
    if parser.has_section("env"):
        data["env"] = dict(parser.items("env"))
    return data


def read_profile(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """Read a profile into a dict of :class:`JobSpec` field values.

    Returns:
        ``{field: value}``; only the keys the profile sets.

    Raises:
        ProfileError: the file is missing, not TOML/JSON/INI, cannot be parsed,
            has a key that is not a :class:`JobSpec` field, or a value SLURM
            would refuse (the message names the file, key and what is allowed).
    """
    path = find_profile(name_or_path)
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".ini":
            data = _read_ini(path)
        else:
            raise ProfileError(f"{path}: profile must end in {', '.join(SUFFIXES)}")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, configparser.Error, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot parse profile: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile must be a table/object of job options")
    allowed = set(JobSpec.field_names())
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ProfileError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    try:
        JobSpec().merged(data)
    except (ValueError, TypeError) as exc:
        raise ProfileError(f"{path}: {exc}") from exc
    return data


def load_spec(profile: str | os.PathLike | None = None, **overrides: Any) -> JobSpec:
    """Build a :class:`JobSpec` from an optional profile and option overrides.

    ``overrides`` set to ``None`` keep the profile's value; lists (``setup``,
    ``extra``) given as overrides are appended to the profile's; ``env`` is merged.

    Raises:
        ProfileError: see :func:`read_profile`.
        ValueError: an override is invalid.
    """
    base = read_profile(profile) if profile else {}
    values: dict[str, Any] = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in _LIST_KEYS:
            values[key] = list(base.get(key, [])) + list(value)
        elif key == "env":
            values[key] = {**base.get("env", {}), **value}
        else:
            values[key] = value
    return JobSpec().merged(values)
