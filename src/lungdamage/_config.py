"""Reading small configuration files (TOML, YAML, JSON) into plain data.

One parser switch for scheme files and visit protocols; the caller turns the
data into its own type and names the fields that are wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_config_file", "ConfigSyntaxError"]

SUFFIXES = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}


class ConfigSyntaxError(ValueError):
    """The file does not parse; the message carries the parser's line and column."""


def read_config_file(path: str | Path, *, allowed: tuple[str, ...] = (".toml", ".yaml", ".yml", ".json")) -> Any:
    """Parse ``path`` by its suffix.

    Raises
    ------
    FileNotFoundError
        ``path`` is not a file.
    ValueError
        The suffix is not in ``allowed`` (the message lists them).
    ConfigSyntaxError
        The text does not parse (TOML, YAML and JSON parsers all name the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(str(path))
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise ValueError(f"unknown format {suffix!r}; use {', '.join(allowed)}")
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError
        raise ConfigSyntaxError(f"is not valid {SUFFIXES[suffix]}: {' '.join(str(exc).split())}") from None
