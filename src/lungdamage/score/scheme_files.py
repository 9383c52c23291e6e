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

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._config import ConfigSyntaxError, read_config_file
from ..errors import SchemeError
from .schemes import Scheme, scheme_from_dict

__all__ = ["load_scheme_file"]


def load_scheme_file(path: str | Path) -> Scheme:
    """Load and validate a scheme file; raises :class:`SchemeError` with line or field."""
    path = Path(path)
    try:
        data = read_config_file(path)
    except FileNotFoundError:
        raise SchemeError(
            f"Scheme file {path} does not exist. Potential fix: check the path or use a preset name."
        ) from None
    except ConfigSyntaxError as exc:
        # all three parsers put the line (and column) in their message
        raise SchemeError(
            f"Scheme file {path} {exc}. Potential fix: compare with examples/schemes/covid.toml (or .yaml)."
        ) from None
    except ValueError as exc:
        raise SchemeError(f"Scheme file {path}: {exc}") from None
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        locate = _yaml_locator(text)
    elif suffix == ".toml":
        locate = _toml_locator(text)
    else:
        locate = _text_locator(text)
    return scheme_from_dict(data, source=str(path), locate=locate)


_FIELD = re.compile(r"^(?P<key>\w+)(?:\[(?P<index>\d+)\])?(?:\.(?P<sub>\w+))?$")


def _split(field: str) -> tuple[str, int | None, str | None]:
    m = _FIELD.match(field)
    if not m:
        return field, None, None
    index = m.group("index")
    return m.group("key"), (int(index) if index is not None else None), m.group("sub")


def _yaml_locator(text: str) -> Callable[[str], int | None]:
    """Line (1-based) of a field in a YAML document, from the composed node tree."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # pragma: no cover - already parsed once
        root = None

    def child(node: Any, key: str) -> tuple[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if getattr(k, "value", None) == key:
                    return k, v
        return None, None

    def locate(field: str) -> int | None:
        key, index, sub = _split(field)
        knode, vnode = child(root, key)
        if knode is None:
            return None
        best = knode
        if index is not None and isinstance(vnode, yaml.SequenceNode) and index < len(vnode.value):
            item = vnode.value[index]
            best = item
            if sub:
                sk, _ = child(item, sub)
                best = sk or item
        return best.start_mark.line + 1

    return locate


def _toml_locator(text: str) -> Callable[[str], int | None]:
    """Line (1-based) of a field in a TOML file: top-level keys and ``[[bands]]`` tables."""
    lines = text.splitlines()
    headers = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[", ln)]
    band_headers = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\[\s*bands\s*\]\]", ln)]

    def key_line(key: str, start: int, stop: int) -> int | None:
        pat = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for i in range(start, stop):
            if pat.match(lines[i]):
                return i + 1
        return None

    def locate(field: str) -> int | None:
        key, index, sub = _split(field)
        if key == "bands" and index is not None and index < len(band_headers):
            start = band_headers[index]
            stop = next((h for h in headers if h > start), len(lines))
            return (key_line(sub, start + 1, stop) if sub else None) or start + 1
        top_stop = headers[0] if headers else len(lines)
        return key_line(key, 0, top_stop) or (band_headers[0] + 1 if key == "bands" and band_headers else None)

    return locate


def _text_locator(text: str) -> Callable[[str], int | None]:
    """JSON: the line of the first occurrence of the field's key (best effort)."""
    lines = text.splitlines()

    def locate(field: str) -> int | None:
        key, _, sub = _split(field)
        for i, ln in enumerate(lines):
            if f'"{sub or key}"' in ln:
                return i + 1
        return None

    return locate
