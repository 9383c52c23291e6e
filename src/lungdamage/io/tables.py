"""Result tables to files: CSV (formula-escaped), Parquet or JSON, chosen by name or file suffix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["TABLE_FORMATS", "table_format", "write_table"]

#: File formats of :func:`write_table`.
TABLE_FORMATS = ("csv", "parquet", "json")


def table_format(path: str | Path | None, fmt: str | None) -> str:
    """The output format: ``fmt`` if given, else from the suffix of ``path``.

    Raises
    ------
    InputError
        ``fmt`` is not one of :data:`TABLE_FORMATS`, or (without ``fmt``) the
        suffix of ``path`` is not.

    Examples
    --------
    >>> table_format("results/scan.parquet", None)
    'parquet'
    >>> table_format("results/scan.txt", "csv")
    'csv'
    """
    if fmt:
        if fmt not in TABLE_FORMATS:
            raise InputError(f"Unknown table format {fmt!r}. Allowed: {', '.join(TABLE_FORMATS)}.")
        return fmt
    suffix = Path(str(path)).suffix.lower().lstrip(".")
    if suffix not in TABLE_FORMATS:
        raise InputError(
            f"Output {path}: unknown format {('.' + suffix) if suffix else '(no suffix)'}. "
            "Potential fix: end the file name in .csv, .parquet or .json, or pass --format."
        )
    return suffix


def write_table(df: Any, path: str | Path, *, fmt: str | None = None) -> Path:
    """Write a DataFrame as CSV, Parquet or JSON (a list of row records), by ``fmt`` or suffix.

    CSV cells that a spreadsheet would run as a formula are escaped
    (:func:`lungdamage.io.safe.escape_formulas`).  Missing folders are created.

    Parameters
    ----------
    df : pandas.DataFrame
    path : str or Path
    fmt : {"csv", "parquet", "json"}, optional
        Default: from the suffix of ``path``.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    fmt = table_format(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        from .safe import escape_formulas

        escape_formulas(df).to_csv(path, index=False)
    elif fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_json(path, orient="records", indent=1, double_precision=15)
    return path
