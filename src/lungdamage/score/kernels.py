"""The one-pass scoring kernel: per-region HU histograms from one ``np.bincount``.

Every lung voxel contributes ``code << 16 | (hu as uint16)`` to one
``np.bincount``; the result is an exact HU histogram per region code.  Band
counts then come from a lookup table over the 65,536 possible HU values
(:meth:`Scheme.band_index_of_hu`) applied to the histogram instead of to every
voxel, which is cheaper and lets several schemes, mean density and
percentiles share the same pass.  Pure functions: no I/O, no logging, inputs
never modified.
"""

from __future__ import annotations

import numpy as np

__all__ = ["region_histograms", "HU_OFFSET", "N_HU"]

#: Histogram bin ``i`` holds HU value ``i - HU_OFFSET``.
HU_OFFSET = 32768
N_HU = 65536


def region_histograms(hu: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Exact HU histogram of every label code.

    Parameters
    ----------
    hu : ndarray of int16, shape (slices, rows, columns)
    labels : ndarray of uint8, same shape
        0 = not counted.

    Returns
    -------
    ndarray of int64, shape (max_code + 1, 65536)
        ``out[c, i]`` = number of voxels with label ``c`` and HU ``i - 32768``.
        Row 0 is all zeros (background is not counted).

    Examples
    --------
    >>> hu = np.array([[[-1000, -500, 0]]], np.int16)
    >>> lab = np.array([[[1, 1, 2]]], np.uint8)
    >>> h = region_histograms(hu, lab)
    >>> int(h[1, -500 + HU_OFFSET]), int(h[2].sum())
    (1, 1)
    """
    hu = np.asarray(hu)
    labels = np.asarray(labels)
    if hu.shape != labels.shape:
        raise ValueError(f"hu shape {hu.shape} != labels shape {labels.shape}")
    if hu.dtype != np.int16 or labels.dtype != np.uint8:
        raise TypeError(f"expected int16 HU and uint8 labels, got {hu.dtype} and {labels.dtype}")
    flat_labels = labels.reshape(-1)
    inside = flat_labels != 0
    n_codes = int(flat_labels.max(initial=0)) + 1
    key = flat_labels[inside].astype(np.intp)
    key <<= 16
    # int16 -> uint16 bit pattern -> shift by 32768 so that bin order is HU order
    key |= (hu.reshape(-1)[inside].view(np.uint16) ^ np.uint16(0x8000))
    counts = np.bincount(key, minlength=n_codes << 16)
    return counts.reshape(n_codes, N_HU)
