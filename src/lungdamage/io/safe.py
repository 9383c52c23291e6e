"""Text that reaches spreadsheets: CSV cells never become formulas.

DICOM text (SeriesDescription, PatientID, kernel names, paths) is written into
CSV tables that people open in spreadsheet programs, which evaluate a cell
starting with ``=``, ``+``, ``-`` or ``@`` (and, in some, a leading tab or
carriage return) as a formula (CSV injection).  :func:`escape_formulas`
prefixes such *text* cells with an apostrophe, the OWASP recommendation;
numeric cells (including negative numbers) are left as numbers.
"""

from __future__ import annotations

__all__ = ["FORMULA_PREFIXES", "escape_formula", "escape_formulas"]

#: First characters that make a spreadsheet treat a cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_formula(value):
    """``"'" + value`` for a string starting with a formula character; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def escape_formulas(df):
    """A copy of DataFrame ``df`` whose text cells cannot start a spreadsheet formula.

    Only object/string columns are touched, and in them only ``str`` values;
    numbers, booleans and missing values stay as they are.
    """
    from pandas.api.types import is_object_dtype, is_string_dtype

    out = df.copy(deep=False)
    for col in out.columns:
        series = out[col]
        if is_object_dtype(series.dtype) or is_string_dtype(series.dtype):
            mask = series.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_PREFIXES)).astype(bool)
            if bool(mask.any()):
                out[col] = series.mask(mask, series[mask].map(lambda v: "'" + v))
    import pandas as pd

    names = out.columns
    formula_names = any(isinstance(c, str) and c.startswith(FORMULA_PREFIXES) for c in names)
    if not isinstance(names, pd.MultiIndex) and formula_names:
        out.columns = [escape_formula(c) for c in names]
    return out
