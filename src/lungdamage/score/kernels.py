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


def region_histograms(hu: np.ndarray, labels: np.ndarray, *, chunk_vox: int = 1 << 22) -> np.ndarray:
    """Exact HU histogram of every label code.

    Parameters
    ----------
    hu : ndarray of int16, shape (slices, rows, columns)
    labels : ndarray of uint8, same shape
        0 = not counted.
    chunk_vox : int
        Voxels per slab (along the first axis) of the one pass.

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
    if labels.ndim == 0:
        hu, labels = hu.reshape(1), labels.reshape(1)
    # slabs of about ``chunk_vox`` voxels along the first axis: the per-voxel keys stay small (in cache, no
    # page faults on fresh 100-MB temporaries); views of a bounding box work as they are (boolean selection
    # needs no contiguous copy)
    step = max(1, chunk_vox // max(int(np.prod(labels.shape[1:], dtype=np.int64)), 1))
    counts = np.zeros(N_HU, np.intp)  # row 0 (background) only, until a code is seen
    for start in range(0, labels.shape[0], step):
        inside = labels[start:start + step] != 0
        codes = labels[start:start + step][inside]
        if not codes.size:
            continue
        n_bins = max(counts.size, (int(codes.max()) + 1) << 16)
        key = np.left_shift(codes, 16, dtype=np.intp)
        del codes
        # int16 -> uint16 bit pattern -> flip the sign bit (shift by 32768) so that bin order is HU order
        key |= hu[start:start + step][inside].view(np.uint16)
        key ^= 0x8000
        part = np.bincount(key, minlength=n_bins)
        part[: counts.size] += counts
        counts = part
    return counts.reshape(-1, N_HU)
