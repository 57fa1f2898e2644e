"""A model repository on disk, in the layout Triton users know, and each model's version policy.

    REPO/
      adult/                 a model (its name in URLs)
        edgefair.toml        optional: version policy and field trial (below)
        1/                   a version: an edgefair bundle (manifest.json, model.onnx, ...)
        2/

Version folders are positive integers, as in Triton. Every mistake is one line naming the
folder or key: a version folder holding no bundle, a folder that is not a version number,
two folders claiming one version ("2" and "02" would both be the latest), a model with
no versions, an unknown key in ``edgefair.toml``.

``edgefair.toml`` (every key optional)::

    default = "latest_certified"     # or a version number: what answers unversioned requests
    allow_failed_certificate = false # may a version whose certificate did not pass be loaded?
    [field]                          # checks in the field
    candidate = 2                    # a candidate version beside the serving one (optional)
    mode = "shadow"                  # shadow (serving answers) | canary (candidate answers `share`)
    share = 0.1
    check_every = 200                # labelled rows between looks at the gate
    max_looks = 20                   # each look at alpha / max_looks
    policy = "policy.toml"           # relative to the model folder; the default policy otherwise
    drift = true                     # also watch the serving version's drift against its certificate
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefair.errors import RepositoryError
from edgefair.runtime.bundle import MANIFEST

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG = "edgefair.toml"
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
LATEST_CERTIFIED = "latest_certified"


@dataclass(frozen=True, kw_only=True)
class FieldTrial:
    candidate: int | None  # None: only the serving version's drift is watched
    mode: str = "shadow"
    share: float = 0.0
    check_every: int = 200
    max_looks: int = 20
    policy: Path | None = None
    drift: bool = True


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    default: str | int = LATEST_CERTIFIED
    allow_failed_certificate: bool = False
    field: FieldTrial | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    versions: dict[int, Path]
    config: ModelConfig


_TOP: dict[str, tuple[type, ...]] = {"default": (str, int), "allow_failed_certificate": (bool,), "field": (dict,)}
_FIELD: dict[str, tuple[type, ...]] = {
    "candidate": (int,),
    "mode": (str,),
    "share": (float, int),
    "check_every": (int,),
    "max_looks": (int,),
    "policy": (str,),
    "drift": (bool,),
}


def _typed(doc: dict[str, Any], allowed: Mapping[str, tuple[type, ...]], where: str) -> None:
    for key, value in doc.items():
        if key not in allowed:
            raise RepositoryError(f"{where}: unknown key {key!r}; expected one of {sorted(allowed)}")
        types = allowed[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            raise RepositoryError(f"{where}: {key!r} must be {names}, got {value!r}")


def read_config(model_dir: Path) -> ModelConfig:
    path = model_dir / CONFIG
    if not path.exists():
        return ModelConfig()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise RepositoryError(f"{path}: not valid TOML ({str(exc).splitlines()[0]})") from None
    _typed(doc, _TOP, str(path))
    default = doc.get("default", LATEST_CERTIFIED)
    if (isinstance(default, str) and default != LATEST_CERTIFIED) or (isinstance(default, int) and default < 1):
        raise RepositoryError(f"{path}: 'default' must be {LATEST_CERTIFIED!r} or a version number, got {default!r}")
    trial = None
    if "field" in doc:
        f = doc["field"]
        _typed(f, _FIELD, f"{path} [field]")
        mode = f.get("mode", "shadow")
        if mode not in ("shadow", "canary"):
            raise RepositoryError(f"{path} [field]: 'mode' must be 'shadow' or 'canary', got {mode!r}")
        share = float(f.get("share", 0.1 if mode == "canary" else 0.0))
        if not 0.0 <= share <= 1.0 or (mode == "shadow" and share):
            raise RepositoryError(f"{path} [field]: 'share' must be in [0, 1], and only with mode 'canary'")
        if f.get("check_every", 1) < 1 or f.get("max_looks", 1) < 1:
            raise RepositoryError(f"{path} [field]: 'check_every' and 'max_looks' must be at least 1")
        trial = FieldTrial(
            candidate=f.get("candidate"),
            mode=mode,
            share=share,
            check_every=f.get("check_every", 200),
            max_looks=f.get("max_looks", 20),
            policy=model_dir / f["policy"] if "policy" in f else None,
            drift=f.get("drift", True),
        )
    return ModelConfig(
        default=default, allow_failed_certificate=doc.get("allow_failed_certificate", False), field=trial
    )


def is_repository(path: str | Path) -> bool:
    """A folder that is not a bundle itself and holds model folders (not plain files only)."""
    p = Path(path)
    return p.is_dir() and not (p / MANIFEST).exists() and any(e.is_dir() for e in p.iterdir())


def scan_model(model_dir: Path) -> ModelEntry:
    """One model folder: its versions (each must hold a bundle) and its config."""
    name = model_dir.name
    if (model_dir / MANIFEST).is_file():
        raise RepositoryError(
            f"{model_dir}: is a bundle, not a model folder; a repository holds model folders of version "
            f"folders ({model_dir.parent.parent}/<model>/<version>/), or serve the bundle itself"
        )
    if not NAME.fullmatch(name):
        raise RepositoryError(f"{model_dir}: a model folder's name must be letters, digits, '_', '.' or '-'")
    versions: dict[int, Path] = {}
    for entry in sorted(model_dir.iterdir()):
        if not entry.is_dir():
            continue  # edgefair.toml, config.pbtxt, a README: not versions
        if not (entry.name.isascii() and entry.name.isdigit()) or int(entry.name) < 1:
            raise RepositoryError(f"{entry}: a version folder's name must be a positive integer (Triton's layout)")
        number = int(entry.name)
        if number in versions:
            raise RepositoryError(
                f"{model_dir}: folders {versions[number].name!r} and {entry.name!r} both claim version {number}"
            )
        if not (entry / MANIFEST).is_file():
            raise RepositoryError(f"{entry}: holds no bundle (no {MANIFEST}); build one with edgefair bundle build")
        versions[number] = entry
    if not versions:
        raise RepositoryError(f"{model_dir}: holds no version folders (expected {model_dir}/1/ with a bundle)")
    config = read_config(model_dir)
    if config.field is not None and config.field.candidate is not None and config.field.candidate not in versions:
        raise RepositoryError(f"{model_dir / CONFIG} [field]: candidate version {config.field.candidate} has no folder")
    if isinstance(config.default, int) and config.default not in versions:
        raise RepositoryError(f"{model_dir / CONFIG}: default version {config.default} has no folder")
    return ModelEntry(name, model_dir, versions, config)


def scan(root: str | Path) -> dict[str, ModelEntry]:
    """Every model folder of a repository, checked; the first problem is one line."""
    p = Path(root)
    if not p.is_dir():
        raise RepositoryError(f"{p}: no such model repository (a folder of model folders)")
    models = {e.name: scan_model(e) for e in sorted(p.iterdir()) if e.is_dir()}
    if not models:
        raise RepositoryError(f"{p}: holds no model folders")
    return models
