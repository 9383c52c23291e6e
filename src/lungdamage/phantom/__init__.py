"""Synthetic thorax phantom with exact ground truth, and a DICOM series writer.

The phantom is built from analytic solids (implicit functions ``f(x, y, z)``
in patient LPS millimetres, negative inside) and rendered onto a CT grid with
partial volume: every voxel near a surface gets the occupancy of a voxel-sized
box filter across that surface, estimated from the signed distance and the
surface normal (``occupancy = clip(0.5 - d / W, 0, 1)`` with ``W`` the voxel's
extent along the normal).  Nothing is supersampled, so a 512×512×400 scan
renders in seconds, slab by slab.

Anatomy (head-first supine, slice 0 most inferior): body with subcutaneous
fat and muscle, a patient table below (posterior to) the body, ribs, spine,
heart with pericardial fat, aorta, superior vena cava, trachea and main
bronchi (air lumen with a soft-tissue wall, from the top of the scan down to
the carina and out to each hilum), and two lungs (parenchyma about -850 HU)
that fill the thoracic cavity above dome-shaped diaphragms, narrow to an apex
and come within 2 mm of each other anteriorly (the anterior junction line).
Inside the lungs: an optional vessel tree, ground-glass opacities (GGO, about
-550 HU, soft edges) and consolidations (-50 HU, each inside a GGO halo), one
of them a large juxtapleural consolidation touching the posterior chest wall.

HU values are chosen so that each band edge of the ``covid`` scheme lies
halfway between the two tissues it separates (-700 between aerated lung and
GGO, -300 between GGO and consolidation); partial-volume voxels at lesion
edges then fall on each side of a band edge in proportion to their share, and
band counts inside the true lung mask reproduce the true fractions.

Ground truth (:class:`PhantomTruth`) is on the CT grid (voxel masks at 50 %
occupancy) plus exact per-lung fractions computed from the continuous
geometry by quasi-Monte-Carlo integration, independent of the CT grid.

Notes on the options of :func:`make_phantom`:

- ``noise_hu``: white Gaussian noise smoothed in-plane with a [1, 2, 1]/4
  binomial kernel along rows and columns (a Gaussian of 0.71 pixel) and
  rescaled to ``noise_hu``; slices are independent; 0 gives a noise-free
  volume.
- ``lung_partial_volume`` is off by default: a partial-volume voxel between
  lung (-850) and soft tissue (+40) lies in the GGO band for lung shares of
  50-83 %, which adds about 3-6 percentage points of spurious GGO at 1.25-5 mm
  slices (the known thick-slice confounder) and would hide the lesion truth.
  Lesions, vessels, airways, bones and all other interfaces always have
  partial volume.
- ``fissures`` draws 1 mm soft-tissue sheets as they show on thin-slice CT;
  by partial volume the fissure voxels fall in the GGO HU band, so phantoms
  used to check damage percentages leave it off.
- ``adult_lobes`` places the fissures (``truth.lobes`` and the drawn sheets)
  so each lobe's share of the total lung volume is within 1 point of the
  supine means of Yamada et al. 2020 (RUL 17.9, RML 9.3, RLL 26.5, LUL 23.1,
  LLL 23.2 %).
- ``colon_gas`` puts colon loops next to the lung bases under both
  hemidiaphragms (hepatic and splenic flexures, 40-44 mm across): gas mottled
  with stool (+30 HU), about half of the lumen each, at the level of the
  posterior costophrenic recesses.  The lung truth does not change.

Layout: :mod:`._solids` (implicit solids, partial volume), :mod:`._anatomy`
(tissue values, lesions, the thorax's solids), :mod:`._render` (painting a
slab, truth fractions), :mod:`._make` (:func:`make_phantom`) and
:mod:`._dicom` (:func:`write_dicom_series`).

Examples
--------
>>> from lungdamage.phantom import make_phantom
>>> ph = make_phantom(matrix=64, slice_thickness_mm=10.0, noise_hu=0.0, vessels=False)
>>> ph.ct.shape
(32, 64, 64)
>>> 0 < ph.truth.fractions["right"]["damage_pct"] < 40
True
"""

from __future__ import annotations

from ._anatomy import DEFAULT_LESIONS, TISSUE_HU, Lesion
from ._dicom import write_dicom_series
from ._make import (
    COVERAGE_MM,
    FOV_MM,
    Phantom,
    PhantomTruth,
    default_n_slices,
    dependent_consolidation,
    make_phantom,
)

__all__ = [
    "Lesion",
    "Phantom",
    "PhantomTruth",
    "TISSUE_HU",
    "DEFAULT_LESIONS",
    "FOV_MM",
    "COVERAGE_MM",
    "default_n_slices",
    "dependent_consolidation",
    "make_phantom",
    "write_dicom_series",
]
