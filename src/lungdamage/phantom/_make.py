"""The phantom's types and its builder: :func:`make_phantom` as a sequence of named steps."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..regions import LOBE_CODES, LUNG_CODES, RegionMap
from ..volume import CTVolume, ScanMeta
from ._anatomy import DEFAULT_LESIONS, Lesion, _Anatomy
from ._render import (
    _NOISE_STD_AFTER_SMOOTHING,
    _render_base2d,
    _render_bowel,
    _render_slab,
    _render_vessels,
    _smooth_binomial,
    _true_fractions,
)
from ._solids import _Slab

logger = logging.getLogger(__name__)

#: Field of view (rows and columns) in mm; pixel size is ``FOV_MM / matrix``.
FOV_MM = 350.0
#: Default cranio-caudal coverage in mm (lungs span about 280 mm).
COVERAGE_MM = 320.0

#: Slab size (voxels) rendered at once: bounds the float32 working memory.
_SLAB_VOXELS = 4_000_000


@dataclass(frozen=True, eq=False)
class PhantomTruth:
    """Ground truth of a phantom, on the CT grid unless stated.

    Attributes
    ----------
    lungs : ndarray of uint8, shape (slices, rows, columns)
        :data:`~lungdamage.regions.LUNG_CODES` (1 right, 2 left); a voxel is
        lung when at least half of it is lung (airways excluded).
    lobes : ndarray of uint8
        :data:`~lungdamage.regions.LOBE_CODES` (1 RUL, 2 RML, 3 RLL, 4 LUL,
        5 LLL), the lung mask split by the fissure surfaces.
    ggo, consolidation : ndarray of bool
        Lesion voxels (>= 50 % occupancy) inside the lung mask; disjoint.
    chest_wall_consolidation : ndarray of bool
        The juxtapleural consolidation (subset of ``consolidation``).
    airways : ndarray of bool
        Air lumen of the trachea and main bronchi (>= 50 % occupancy).
    vessels : ndarray of bool
        Vessel-tree voxels inside the lungs (all False with ``vessels=False``).
    fractions : dict
        ``{"right"|"left"|"total": {"volume_ml", "ggo_ml", "consolidation_ml",
        "ggo_pct", "consolidation_pct", "damage_pct"}}`` from the continuous
        geometry inside the scanned field; percentages of the lung volume.
    lesions : tuple of Lesion
        The lesions actually planted (after ``damage_scale``).
    gas_below_diaphragm : ndarray of bool or None
        Gas voxels (>= 50 %) of the stomach and colon (``stomach_gas`` /
        ``colon_gas``); None when neither was asked for.
    """

    lungs: np.ndarray
    lobes: np.ndarray
    ggo: np.ndarray
    consolidation: np.ndarray
    chest_wall_consolidation: np.ndarray
    airways: np.ndarray
    vessels: np.ndarray
    fractions: dict
    lesions: tuple[Lesion, ...] = ()
    gas_below_diaphragm: np.ndarray | None = None

    def lung_regions(self) -> RegionMap:
        """The true lungs as a :class:`RegionMap` (``lungs`` set)."""
        return RegionMap(self.lungs, dict(LUNG_CODES), method="phantom-truth", region_set="lungs")

    def lobe_regions(self) -> RegionMap:
        """The true lobes as a :class:`RegionMap` (``lobes`` set)."""
        return RegionMap(self.lobes, dict(LOBE_CODES), method="phantom-truth", region_set="lobes")


@dataclass(frozen=True, eq=False)
class Phantom:
    """A rendered phantom: the CT volume and its ground truth."""

    ct: CTVolume
    truth: PhantomTruth

    def __repr__(self) -> str:
        f = self.truth.fractions["total"]
        return (
            f"Phantom({self.ct!r}, damage={f['damage_pct']:.2f}% "
            f"(ggo {f['ggo_pct']:.2f}%, consolidation {f['consolidation_pct']:.2f}%))"
        )

def default_n_slices(slice_thickness_mm: float) -> int:
    """Slices covering :data:`COVERAGE_MM` (thorax plus margin) at this thickness."""
    return max(1, int(math.ceil(COVERAGE_MM / float(slice_thickness_mm))))


def _resolve_lesions(lesions, damage_scale) -> tuple[Lesion, ...]:
    if lesions is None or (isinstance(lesions, str) and lesions == "none"):
        base: tuple[Lesion, ...] = ()
    elif isinstance(lesions, str):
        if lesions != "default":
            raise InputError(
                f"make_phantom: lesions={lesions!r} is not known. "
                "Potential fix: use 'default', 'none' or a sequence of Lesion."
            )
        base = DEFAULT_LESIONS
    else:
        base = tuple(lesions)
        bad = [les for les in base if not isinstance(les, Lesion)]
        if bad:
            raise InputError(
                f"make_phantom: lesions must be Lesion objects; got {type(bad[0]).__name__}. "
                "Potential fix: build them with lungdamage.phantom.Lesion(...)."
            )
    if not (damage_scale >= 0 and math.isfinite(damage_scale)):
        raise InputError(
            f"make_phantom: damage_scale must be a finite number >= 0; got {damage_scale}. "
            "Potential fix: 1.0 is the default lesion size, 0 plants no lesions."
        )
    if damage_scale == 0:
        return ()
    factor = float(damage_scale) ** (1.0 / 3.0)
    return tuple(les.scaled(factor) for les in base)



@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates (float32 mm) of the phantom's CT grid, centred on the thorax."""

    xs: np.ndarray  # column coordinates
    ys: np.ndarray  # row coordinates
    zs: np.ndarray  # slice coordinates
    spacing_mm: tuple[float, float, float]

    @classmethod
    def centred(cls, matrix: int, slice_thickness_mm: float, n_slices: int | None,
                pixel_mm: float | None) -> _Grid:
        n_slices = int(n_slices) if n_slices is not None else default_n_slices(slice_thickness_mm)
        pixel_mm = float(pixel_mm) if pixel_mm is not None else FOV_MM / matrix
        first_x_mm = -(matrix - 1) / 2.0 * pixel_mm
        first_z_mm = -(n_slices - 1) / 2.0 * slice_thickness_mm
        xs = (first_x_mm + pixel_mm * np.arange(matrix)).astype(np.float32)
        zs = (first_z_mm + slice_thickness_mm * np.arange(n_slices)).astype(np.float32)
        return cls(xs, xs.copy(), zs, (slice_thickness_mm, pixel_mm, pixel_mm))

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.zs), len(self.ys), len(self.xs)

    @property
    def origin_lps(self) -> tuple[float, float, float]:
        return float(self.xs[0]), float(self.ys[0]), float(self.zs[0])

    def bounds_mm(self) -> tuple[float, float, float, float, float, float]:
        """Outer faces of the scanned field: (x0, x1, y0, y1, z0, z1) in mm."""
        slice_mm, _, pixel_mm = self.spacing_mm
        xs, ys, zs = self.xs, self.ys, self.zs
        return (
            float(xs[0] - pixel_mm / 2), float(xs[-1] + pixel_mm / 2),
            float(ys[0] - pixel_mm / 2), float(ys[-1] + pixel_mm / 2),
            float(zs[0] - slice_mm / 2), float(zs[-1] + slice_mm / 2),
        )


def _check_grid_args(matrix, slice_thickness_mm, n_slices, pixel_mm, noise_hu) -> None:
    if int(matrix) < 16 or float(slice_thickness_mm) <= 0:
        raise InputError(
            f"make_phantom: matrix must be >= 16 and slice_thickness_mm > 0; got matrix={matrix}, "
            f"slice_thickness_mm={slice_thickness_mm}. Potential fix: e.g. matrix=128, slice_thickness_mm=2.5."
        )
    if noise_hu < 0 or (n_slices is not None and int(n_slices) < 1) or (pixel_mm is not None and pixel_mm <= 0):
        raise InputError(
            f"make_phantom: noise_hu must be >= 0, n_slices >= 1 and pixel_mm > 0; got noise_hu={noise_hu}, "
            f"n_slices={n_slices}, pixel_mm={pixel_mm}. Potential fix: use the defaults."
        )


def _add_noise(hu: np.ndarray, rng: np.random.Generator, noise_hu: float) -> None:
    """Add in-plane correlated Gaussian noise of std ``noise_hu`` to ``hu`` (float32, modified)."""
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    noise = _smooth_binomial(_smooth_binomial(noise, 1), 2)
    hu += noise * np.float32(noise_hu / _NOISE_STD_AFTER_SMOOTHING)


def _empty_truth_masks(shape: tuple[int, int, int], *, bowel: bool) -> dict[str, np.ndarray]:
    """Full-grid truth arrays, keyed as :func:`_render_slab` returns them per slab."""
    masks = {"lungs": np.zeros(shape, np.uint8), "lobes": np.zeros(shape, np.uint8)}
    for key in ("ggo", "cons", "cw", "airways", "vessels", *(("bowel",) if bowel else ())):
        masks[key] = np.zeros(shape, bool)
    return masks


def _render_volume(anat: _Anatomy, grid: _Grid, *, vessels: bool, noise_hu: float, seed: int,
                   lung_partial_volume: bool, stomach_gas: bool,
                   colon_gas: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render the grid slab by slab: the int16 HU volume and the truth masks."""
    n_slices, n_rows, n_columns = grid.shape
    hu16 = np.empty(grid.shape, np.int16)
    masks = _empty_truth_masks(grid.shape, bowel=stomach_gas or colon_gas)
    base2d = _render_base2d(anat, _Slab(grid.xs, grid.ys, np.zeros(1, np.float32), grid.spacing_mm))
    vessel_u8 = _render_vessels(anat, _Slab(grid.xs, grid.ys, grid.zs, grid.spacing_mm)) if vessels else None
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4242]))
    slab_slices = max(1, int(_SLAB_VOXELS // (n_rows * n_columns)))
    for k0 in range(0, n_slices, slab_slices):
        k1 = min(n_slices, k0 + slab_slices)
        slab = _Slab(grid.xs, grid.ys, grid.zs[k0:k1], grid.spacing_mm)
        hu = np.empty((k1 - k0, n_rows, n_columns), np.float32)
        hu[...] = base2d
        out = _render_slab(anat, slab, hu, None if vessel_u8 is None else vessel_u8[k0:k1], lung_partial_volume)
        if stomach_gas or colon_gas:
            out["bowel"] = _render_bowel(slab, hu, stomach=stomach_gas, colon=colon_gas, seed=seed)
        if noise_hu > 0:
            _add_noise(hu, rng, noise_hu)
        np.clip(np.rint(hu), -1024, 3071, out=hu)
        hu16[k0:k1] = hu
        for key, slab_mask in out.items():
            masks[key][k0:k1] = slab_mask
    return hu16, masks


def _truth_from_masks(masks: dict[str, np.ndarray], fractions: dict, planted: tuple[Lesion, ...]) -> PhantomTruth:
    """The read-only :class:`PhantomTruth` of the rendered masks."""
    for mask in masks.values():
        mask.setflags(write=False)
    return PhantomTruth(
        lungs=masks["lungs"], lobes=masks["lobes"], ggo=masks["ggo"], consolidation=masks["cons"],
        chest_wall_consolidation=masks["cw"], airways=masks["airways"], vessels=masks["vessels"],
        fractions=fractions, lesions=planted, gas_below_diaphragm=masks.get("bowel"),
    )


def _phantom_meta(*, patient_id: str, study_date: str, kernel: str, slice_thickness_mm: float,
                  options: dict) -> ScanMeta:
    """Scan metadata of a phantom; ``options`` (seed, damage_scale, ...) go to ``extra["phantom"]``."""
    return ScanMeta(
        source="phantom",
        patient_id=patient_id,
        study_date=study_date,
        modality="CT",
        series_description=f"lungdamage phantom seed={options['seed']} scale={options['damage_scale']:g}",
        kernel=kernel,
        slice_thickness_mm=slice_thickness_mm,
        manufacturer="lungdamage-phantom",
        contrast=False,
        extra={"phantom": options},
    )


def make_phantom(
    *,
    matrix: int = 128,
    slice_thickness_mm: float = 2.5,
    n_slices: int | None = None,
    pixel_mm: float | None = None,
    noise_hu: float = 15.0,
    vessels: bool = True,
    lesions: str | Iterable[Lesion] | None = "default",
    damage_scale: float = 1.0,
    seed: int = 0,
    patient_id: str = "PHANTOM",
    study_date: str = "20200101",
    kernel: str = "STANDARD",
    lung_partial_volume: bool = False,
    truth_samples: int = 2**19,
    fissures: bool = False,
    adult_lobes: bool = False,
    stomach_gas: bool = False,
    colon_gas: bool = False,
) -> Phantom:
    """Render the synthetic thorax and its ground truth.

    Parameters
    ----------
    matrix : int
        Rows = columns.  Pixel size ``FOV_MM / matrix`` (512 → 0.68 mm).
    slice_thickness_mm : float
        Slice thickness = spacing between slices (contiguous slices), mm.
    n_slices : int, optional
        Number of slices, centred on the thorax; default
        :func:`default_n_slices` (320 mm coverage, e.g. 256 at 1.25 mm).
    pixel_mm : float, optional
        In-plane pixel size in mm (overrides the 350 mm field of view).
    noise_hu : float
        Standard deviation (HU) of in-plane correlated noise (white noise
        smoothed by [1, 2, 1]/4 along rows and columns; slices independent).
    vessels : bool
        Render the pulmonary vessel tree (+40 HU) inside the lungs.
    lesions : 'default', 'none', None or sequence of :class:`Lesion`
        Lesion layout; positions in patient LPS mm.
    damage_scale : float
        Multiplies every lesion's volume (radii by its cube root; 0: none).
        Lesions are clipped to the lungs: damage is about proportional.
    seed : int
        Seeds the noise and the vessel tree (the rest is fixed geometry).
    patient_id, study_date, kernel : str
        Stored in :attr:`CTVolume.meta`.
    lung_partial_volume : bool
        Blend the lung surface (pleura, diaphragm, mediastinum) with its
        neighbours by partial volume; off by default (see the package notes).
        All other interfaces always have partial volume.
    truth_samples : int
        Sample points per lung (one jittered point per cell of a regular
        grid) for the true volumes and fractions.
    fissures : bool
        Draw the fissures (the lobe boundaries of ``truth.lobes``) as 1 mm
        soft-tissue sheets; off by default (they fall in the GGO band and
        ``truth.fractions`` does not count them).
    adult_lobes : bool
        Place the fissures so each lobe's volume share is within 1 point of
        the adult supine means (see the package notes); off by default (small
        lower lobes: RLL about 10 %, LLL 12 %).
    stomach_gas : bool
        Put a stomach under the left hemidiaphragm (+20 HU fluid, gas cap above
        an air-fluid level, >= 10 mm below the lung base).  Off by default.
    colon_gas : bool
        Put gas-filled colon loops (hepatic and splenic flexures, gas mottled
        with stool at +30 HU) under both hemidiaphragms.  Off by default.
        Neither gas is lung (``truth.gas_below_diaphragm`` marks it).

    Returns
    -------
    Phantom
        ``ct`` (int16 HU, shape (n_slices, matrix, matrix), head-first supine,
        default LPS direction: slices toward superior, rows toward posterior,
        columns toward patient left; slice 0 most inferior) and ``truth``.

    Raises
    ------
    InputError
        Non-positive sizes, negative noise or damage, unknown lesion layout.
    """
    _check_grid_args(matrix, slice_thickness_mm, n_slices, pixel_mm, noise_hu)
    grid = _Grid.centred(int(matrix), float(slice_thickness_mm), n_slices, pixel_mm)
    planted = _resolve_lesions(lesions, damage_scale)
    anat = _Anatomy(planted, vessels=vessels, seed=seed, fissures=fissures, adult_lobes=adult_lobes)
    hu16, masks = _render_volume(anat, grid, vessels=vessels, noise_hu=noise_hu, seed=seed,
                                 lung_partial_volume=lung_partial_volume, stomach_gas=stomach_gas,
                                 colon_gas=colon_gas)
    fractions = _true_fractions(anat, grid.bounds_mm(), truth_samples)
    gas = {"stomach_gas": stomach_gas, "colon_gas": colon_gas}
    options = {"seed": seed, "damage_scale": damage_scale, "noise_hu": noise_hu, "vessels": vessels,
               "fissures": fissures, **{name: True for name, wanted in gas.items() if wanted}}
    meta = _phantom_meta(patient_id=patient_id, study_date=study_date, kernel=kernel,
                         slice_thickness_mm=grid.spacing_mm[0], options=options)
    ct = CTVolume(hu16, grid.spacing_mm, grid.origin_lps, meta=meta)
    logger.debug("phantom rendered: %r", ct)
    return Phantom(ct=ct, truth=_truth_from_masks(masks, fractions, planted))


def dependent_consolidation(
    ph: Phantom,
    *,
    air_fraction: float = 0.25,
    posterior_fraction: float = 0.4,
    height_fraction: float = 0.4,
    seed: int = 0,
) -> tuple[CTVolume, np.ndarray]:
    """The phantom's CT with ARDS-like dependent consolidation painted into both lungs.

    In the lowest ``height_fraction`` of the lungs' slices, the posterior
    ``posterior_fraction`` of the lungs (by each slice's anterior-posterior
    extent) becomes soft tissue (+35 HU, 15 HU noise) holding air pockets
    (bronchograms, aerated lobules: -900 HU) that make up about
    ``air_fraction`` of it.  The lung truth does not change: the consolidated
    voxels are still lung (``ph.truth.fractions`` and the lesion masks are
    those of the phantom before painting and do not count this
    consolidation).  Real consolidations with air bronchograms (e.g.
    COVID-19-NY-SBU A046441) hold 13-46 % air-density pixels.

    Returns
    -------
    ct : CTVolume
        A new volume (same grid and metadata).
    region : ndarray of bool
        The consolidated voxels.
    """
    from scipy import ndimage

    if not 0.0 < air_fraction < 1.0 or not 0.0 < posterior_fraction <= 1.0 or not 0.0 < height_fraction <= 1.0:
        raise ValueError(
            f"dependent_consolidation: air_fraction must be in (0, 1) and the fractions in (0, 1]; got "
            f"air_fraction={air_fraction}, posterior_fraction={posterior_fraction}, height_fraction={height_fraction}"
        )
    ct = ph.ct
    lungs: np.ndarray = ph.truth.lungs > 0
    rng = np.random.default_rng(seed)
    hu = ct.hu.astype(np.float32)
    # phantom axes: (z superior, y posterior, x left)
    has = np.asarray(lungs.any(axis=2))
    first = has.argmax(axis=1)
    last = hu.shape[1] - 1 - has[:, ::-1].argmax(axis=1)
    rows = np.arange(hu.shape[1])[None, :, None]
    region = lungs & (rows >= (last - posterior_fraction * (last - first))[:, None, None])
    zs = np.flatnonzero(region.any(axis=(1, 2)))
    if zs.size:
        region[zs[0] + int(round(height_fraction * len(zs))):] = False
    # seeds grown by a 6-neighbour cross cover about 7x their density
    seeds = rng.random(hu.shape, dtype=np.float32) < 1.0 - (1.0 - air_fraction) ** (1.0 / 7.0)
    pockets = ndimage.binary_dilation(seeds) & region
    del seeds
    hu[region] = 35.0 + rng.normal(0.0, 15.0, int(region.sum())).astype(np.float32)
    hu[pockets] = -900.0 + rng.normal(0.0, 15.0, int(pockets.sum())).astype(np.float32)
    out = CTVolume(np.round(hu).astype(np.int16), ct.spacing_mm, ct.origin_lps, ct.direction, ct.meta)
    return out, region

