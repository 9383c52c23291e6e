"""Scheme files (TOML, YAML or JSON) -> :class:`~lungdamage.score.schemes.Scheme`.

A scheme file looks like (TOML)::

    name = "my-covid"
    damage = ["ggo", "consolidation"]
    [[bands]]
    name = "aerated"
    lo_hu = "-inf"
    hi_hu = -700
    ...

Syntax errors name the line; content errors name the field (``bands[2].lo_hu``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import MissingDependencyError, SchemeError
from .schemes import Scheme, scheme_from_dict

__all__ = ["load_scheme_file"]


def load_scheme_file(path: str | Path) -> Scheme:
    """Load and validate a scheme file; raises :class:`SchemeError` with line or field."""
    path = Path(path)
    if not path.is_file():
        raise SchemeError(f"Scheme file {path} does not exist. Potential fix: check the path or use a preset name.")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise MissingDependencyError("YAML scheme files", "PyYAML", "yaml") from None
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise SchemeError(f"Scheme file {path}: unknown suffix {suffix!r}; use .toml, .yaml or .json")
    except SchemeError:
        raise
    except MissingDependencyError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError
        raise SchemeError(f"Scheme file {path} is not valid {suffix[1:].upper()}: {exc}") from None
    return scheme_from_dict(data, source=str(path))
