"""Optional deep-learning backend: lung and lobe segmentation with lungmask.

`lungmask <https://github.com/JoHof/lungmask>`_ (Hofmanninger et al., Eur
Radiol Exp 2020) ships 2-D U-Nets applied slice by slice: ``R231`` and
``R231CovidWeb`` (right/left lungs), ``LTRCLobes`` (five lobes) and the
``LTRCLobes_R231`` fusion (lobes, with gaps filled from R231).

This adapter runs lungmask's own code (preprocessing, U-Net, post-processing,
fusion) but keeps its habits out of the caller's process:

- nothing is downloaded: weights come from a local file, a folder, or the
  torch hub cache where ``lungmask`` itself would have stored them (fetched
  once with ``lungdamage models download``, :mod:`lungdamage.models`), and are
  read with ``torch.load(weights_only=True)``;
- ``SystemExit`` raised inside lungmask becomes :class:`SegmentationError`;
- the process-wide warnings filter lungmask installs at import, and the stdout
  handler it attaches to its logger, are undone; during a call its log records
  go through ordinary :mod:`logging` propagation instead of being printed;
- its label codes are translated in one place,
  :func:`lungdamage.regions.translate_labels` (conventions ``lungmask-lungs``
  and ``lungmask``).

torch and lungmask are imported lazily; when absent,
:class:`~lungdamage.errors.MissingDependencyError` names the extra to install
(``pip install torch==2.13.0`` first for the CPU build, then
``pip install 'lungdamage[lungmask]'``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .._files import file_sha256
from ..errors import InputError, MissingDependencyError, SegmentationError
from ..regions import RegionMap, translate_labels
from ..volume import CTVolume

__all__ = [
    "segment_lungmask",
    "lungmask_weights_path",
    "lungmask_labels_to_regions",
    "MissingWeightsError",
    "LUNGMASK_MODELS",
]

log = logging.getLogger(__name__)

#: Models offered, with the lungmask networks each one runs (base first, then
#: the fill model of a fusion) and the region set of the result.
LUNGMASK_MODELS: dict[str, tuple[tuple[str, ...], str]] = {
    "R231": (("R231",), "lungs"),
    "R231CovidWeb": (("R231CovidWeb",), "lungs"),
    "LTRCLobes": (("LTRCLobes",), "lobes"),
    "LTRCLobes_R231": (("LTRCLobes", "R231"), "lobes"),
}

# Output classes (background included) of each network, as in lungmask's MODEL_URLS.
_N_CLASSES = {"R231": 3, "R231CovidWeb": 3, "LTRCLobes": 6}

# U-Net constructor arguments used by lungmask.mask.get_model for every model.
_UNET_KWARGS = dict(padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False)

# Saving and restoring warning filters and logger state is process-wide, and two
# concurrent inferences would only fight over the same cores: one call at a time.
_LOCK = threading.RLock()


class MissingWeightsError(SegmentationError):
    """The weight file of a lungmask model is neither given nor in the torch hub cache.

    ``expected`` is the file name lungmask would download to, ``directory``
    the folder it is looked for in, ``url`` where to get it.
    """

    def __init__(self, message: str, *, network: str, expected: str, directory: Path, url: str):
        super().__init__(message)
        self.network = network
        self.expected = expected
        self.directory = directory
        self.url = url


# -- optional dependencies -----------------------------------------------------


@contextmanager
def _quarantine() -> Iterator[None]:
    """Run lungmask code without letting it change warnings or logging for good.

    Saves and restores ``warnings.filters`` (lungmask calls
    ``warnings.filterwarnings("ignore", category=UserWarning)`` at import), the
    root logger's handlers and level, and the ``lungmask`` logger's handlers,
    level, ``propagate`` and ``disabled`` (lungmask attaches a stdout handler at
    import).  Inside the block lungmask's records propagate to the caller's
    logging configuration and nothing is printed.
    """
    root = logging.getLogger()
    lm = logging.getLogger("lungmask")
    saved_root = (root.handlers[:], root.level)
    # A logger not configured by anyone yet is restored to this pristine state,
    # which drops the stdout handler lungmask adds on first import.
    saved_lm = (lm.handlers[:], lm.level, lm.propagate, lm.disabled)
    try:
        with warnings.catch_warnings():
            yield
    finally:
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        lm.handlers[:] = saved_lm[0]
        lm.setLevel(saved_lm[1])
        lm.propagate = saved_lm[2]
        lm.disabled = saved_lm[3]


@contextmanager
def _lungmask_logs_to_logging() -> Iterator[None]:
    """Inside the block, lungmask's log records go through normal propagation."""
    lm = logging.getLogger("lungmask")
    lm.handlers[:] = []
    lm.setLevel(logging.NOTSET)
    lm.propagate = True
    yield


def _import_backend() -> tuple[Any, Any, Any]:
    """``(torch, lungmask.mask, lungmask.resunet.UNet)``; call inside :func:`_quarantine`."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("lungmask segmentation", "torch", "lungmask") from None
    try:
        import lungmask.mask as lm_mask
        from lungmask.resunet import UNet
    except ImportError:
        raise MissingDependencyError("lungmask segmentation", "lungmask", "lungmask") from None
    return torch, lm_mask, UNet


# -- weights ------------------------------------------------------------------------


def _model_url(lm_mask: Any, network: str) -> str:
    return str(lm_mask.MODEL_URLS[network][0])


def _hub_checkpoints_dir(torch: Any) -> Path:
    # torch.hub.load_state_dict_from_url stores files in <hub dir>/checkpoints.
    return Path(torch.hub.get_dir()) / "checkpoints"


def lungmask_weights_path(model: str = "R231") -> dict[str, Path]:
    """Where the weight files of ``model`` are looked for when none is given.

    Parameters
    ----------
    model : {"R231", "R231CovidWeb", "LTRCLobes", "LTRCLobes_R231"}

    Returns
    -------
    dict
        lungmask network name -> path in the torch hub cache
        (``torch.hub.get_dir()/checkpoints/<file name of lungmask's URL>``),
        whether or not the file exists.  Two entries for the fusion.
    """
    networks, _ = _model_spec(model)
    with _quarantine():
        torch, lm_mask, _ = _import_backend()
        hub = _hub_checkpoints_dir(torch)
        return {n: hub / os.path.basename(_model_url(lm_mask, n)) for n in networks}


def _model_spec(model: str | None) -> tuple[tuple[str, ...], str]:
    name = "R231" if model is None else str(model)
    if name not in LUNGMASK_MODELS:
        raise InputError(
            f"Unknown lungmask model {name!r}. Allowed: {', '.join(LUNGMASK_MODELS)}. "
            "Potential fix: pass one of the allowed names (--model)."
        )
    return LUNGMASK_MODELS[name]


def _resolve_weights(
    model: str,
    networks: tuple[str, ...],
    weights: str | os.PathLike | Sequence | Mapping | None,
    torch: Any,
    lm_mask: Any,
) -> dict[str, Path]:
    """Map each network of ``model`` to an existing local weight file, or raise."""
    given: dict[str, Path | None] = {n: None for n in networks}
    if weights is None:
        pass
    elif isinstance(weights, Mapping):
        unknown = sorted(str(k) for k in weights if k not in networks)
        if unknown:
            raise InputError(
                f"weights for lungmask model {model!r} name networks {unknown}; expected keys "
                f"{list(networks)}. Potential fix: pass e.g. "
                + "{" + ", ".join(f"{n!r}: 'path/to/file.pth'" for n in networks) + "}."
            )
        given.update({n: Path(p) for n, p in weights.items() if p is not None})
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        if path.is_dir():
            given = {n: path / os.path.basename(_model_url(lm_mask, n)) for n in networks}
        elif len(networks) == 1:
            given = {networks[0]: path}
        else:
            raise InputError(
                f"lungmask model {model!r} runs {len(networks)} networks ({', '.join(networks)}) "
                f"but one weight file was given: {path}. Potential fix: pass a folder holding "
                f"{' and '.join(os.path.basename(_model_url(lm_mask, n)) for n in networks)}, "
                f"a pair of files in the order {networks}, or a dict keyed by network name."
            )
    elif isinstance(weights, Sequence) and len(weights) == len(networks):
        given = {n: Path(p) for n, p in zip(networks, weights, strict=True)}
    else:
        raise InputError(
            f"weights for lungmask model {model!r} must be a file, a folder, a sequence of "
            f"{len(networks)} file(s) in the order {networks} or a dict keyed by network name; "
            f"got {weights!r}."
        )

    hub = _hub_checkpoints_dir(torch)
    resolved: dict[str, Path] = {}
    for network in networks:
        url = _model_url(lm_mask, network)
        expected = os.path.basename(url)
        weights_file = given[network]
        if weights_file is None:
            weights_file = hub / expected
            if not weights_file.is_file():
                raise MissingWeightsError(
                    f"lungmask model {model!r} needs the weight file {expected!r} of network "
                    f"{network!r}, which is not in the torch hub cache {hub}. Scoring never "
                    f"downloads weights. Potential fix: run `lungdamage models download {model}` "
                    f"once (fetches {url} into {hub}, verified), or pass a local copy with --weights "
                    f"(weights= in Python).",
                    network=network, expected=expected, directory=hub, url=url,
                )
        elif not weights_file.is_file():
            raise MissingWeightsError(
                f"Weight file {weights_file} for lungmask network {network!r} (model {model!r}) does not "
                f"exist. Potential fix: point --weights at an existing file (lungmask's own file is "
                f"named {expected!r}, from {url}), or put {expected} in {hub}.",
                network=network, expected=expected, directory=weights_file.parent, url=url,
            )
        resolved[network] = weights_file.resolve()
    return resolved


def _sha256(path: Path) -> str:
    return file_sha256(path)


@functools.lru_cache(maxsize=4)
def _load_network(network: str, path: str, size: int, mtime_ns: int) -> tuple[Any, str]:
    """``(model in eval mode on CPU, sha256 of the file)``; cached per file version."""
    torch, _, UNet = _import_backend()
    try:
        state_dict = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises pickle, zip and runtime errors here
        raise InputError(
            f"Cannot read lungmask weight file {path} for network {network!r}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            "Potential fix: pass a PyTorch state dict (.pth) of lungmask's U-Net, such as "
            "the files lungmask publishes."
        ) from None
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise InputError(
            f"lungmask weight file {path} holds a {type(state_dict).__name__}, not a state dict. "
            "Potential fix: pass a PyTorch state dict (.pth) of lungmask's U-Net."
        )
    # lungmask.mask.get_model reads the class count from the last tensor (last.bias).
    n_classes = len(list(state_dict.values())[-1])
    if n_classes != _N_CLASSES[network]:
        raise InputError(
            f"lungmask weight file {path} has {n_classes} output classes but network "
            f"{network!r} has {_N_CLASSES[network]}. Potential fix: pass the weight file of "
            f"{network} (lungmask model names and files must match)."
        )
    model = UNet(n_classes=n_classes, **_UNET_KWARGS)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise InputError(
            f"lungmask weight file {path} does not fit lungmask's U-Net for {network!r}: "
            f"{str(exc).splitlines()[0]}. Potential fix: pass a state dict saved from "
            "lungmask.resunet.UNet."
        ) from None
    model.eval()
    return model, _sha256(Path(path))


def _network(network: str, path: Path) -> tuple[Any, str]:
    st = path.stat()
    return _load_network(network, str(path), st.st_size, st.st_mtime_ns)


# -- labels ---------------------------------------------------------------------------


def lungmask_labels_to_regions(
    labels: np.ndarray,
    *,
    model: str = "R231",
    info: Mapping[str, object] | None = None,
) -> RegionMap:
    """Canonical :class:`RegionMap` from a lungmask label array.

    Parameters
    ----------
    labels : ndarray of int, shape (slices, rows, columns)
        lungmask output on the CT grid.  Lung models: 1 right, 2 left; lobe
        models: 1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL.  Other codes are background.
    model : str
        lungmask model that produced ``labels`` (picks the convention).
    info : mapping, optional
        Provenance stored in ``RegionMap.info`` (``model`` is always added).

    Returns
    -------
    RegionMap
        ``method='lungmask:<model>'``, ``region_set`` ``'lungs'`` (canonical
        1 right, 2 left) or ``'lobes'`` (1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL).

    Examples
    --------
    >>> import numpy as np
    >>> rm = lungmask_labels_to_regions(np.array([[[0, 1, 3]]]), model="LTRCLobes")
    >>> rm.labels.tolist(), rm.names[4], rm.names[1]
    ([[[0, 4, 1]]], 'LUL', 'RUL')
    """
    _, region_set = _model_spec(model)
    convention = "lungmask-lungs" if region_set == "lungs" else "lungmask"
    method = f"lungmask:{model}"
    rm = translate_labels(labels, convention, method=method)
    return dataclasses.replace(rm, region_set=region_set, info={**dict(info or {}), "model": model})


# -- segmentation ----------------------------------------------------------------------


def _make_inferer(lm_mask: Any, torch: Any, *, model: Any, fill: Any, fill_name: str | None,
                  name: str, batch_size: int, fill_holes: bool, progress: bool, device: str) -> Any:
    # LMInferer.__init__ would fetch weights itself (downloading when no path is
    # given, unpickling with torch.load's defaults); its inference and fusion code
    # only read these attributes, so the instance is filled with our own models.
    inferer = lm_mask.LMInferer.__new__(lm_mask.LMInferer)
    inferer.modelname = name
    inferer.fillmodel = fill_name
    inferer.force_cpu = device == "cpu"
    inferer.batch_size = batch_size
    inferer.volume_postprocessing = fill_holes
    inferer.tqdm_disable = not progress
    inferer.device = torch.device(device)
    inferer.model = model.to(inferer.device)
    inferer.fillmodelm = None if fill is None else fill.to(inferer.device)
    return inferer


def segment_lungmask(
    ct: CTVolume,
    *,
    model: str | None = "R231",
    weights: str | os.PathLike | Sequence | Mapping | None = None,
    batch_size: int = 20,
    fill_holes: bool = True,
    progress: bool = False,
    device: str = "cpu",
) -> RegionMap:
    """Segment lungs or lobes with a lungmask U-Net.

    Parameters
    ----------
    ct : CTVolume
        CT in HU, any orientation; lungmask reorients a copy to LPS itself and
        the labels come back on ``ct``'s grid.
    model : {"R231", "R231CovidWeb", "LTRCLobes", "LTRCLobes_R231"}
        ``None`` means ``"R231"``.
    weights : path, folder, pair of paths or dict, optional
        Local weight files (PyTorch state dicts of lungmask's U-Net).  A file
        for a single-network model; a folder holding lungmask's own file names
        (``unet_r231-d5d2fc3d.pth``, ``unet_ltrclobes-3a07043d.pth``,
        ``unet_r231covid-0de78a7e.pth``); for ``LTRCLobes_R231`` a pair
        ``(ltrclobes, r231)`` or ``{"LTRCLobes": path, "R231": path}``.  Networks
        without a given file are taken from the torch hub cache
        (:func:`lungmask_weights_path`).  Nothing is ever downloaded.
    batch_size : int
        Slices per forward pass (memory vs speed).
    fill_holes : bool
        lungmask's volume post-processing: keep the largest connected component
        per label, merge small fragments into their neighbour, fill holes.
        ``False`` returns the raw network labels (the fusion always
        post-processes, as in lungmask).
    progress : bool
        Show lungmask's tqdm progress bars (stderr).
    device : str
        Torch device, ``"cpu"`` (default) or e.g. ``"cuda"``.

    Returns
    -------
    RegionMap
        uint8 labels of shape ``ct.shape``; ``region_set`` ``'lungs'`` (R231*)
        or ``'lobes'`` (LTRCLobes*); ``method='lungmask:<model>'``; ``info``
        holds the model, per network the weight file path and SHA-256, and the
        lungmask and torch versions.

    Raises
    ------
    MissingDependencyError
        torch or lungmask is not installed.
    MissingWeightsError
        A weight file is absent (names the file and the folder to put it in).
    InputError
        Unknown model, malformed ``weights`` or a weight file that is not a
        state dict of the right network.
    SegmentationError
        lungmask failed (including its ``sys.exit``) or found no lung.
    """
    networks, _ = _model_spec(model)
    name = "R231" if model is None else str(model)
    _check_arguments(ct, batch_size)
    run = _LungmaskRun(name, networks, int(batch_size), bool(fill_holes), bool(progress), device)
    with _LOCK, _quarantine():
        torch, lm_mask, _ = _import_backend()
        paths = _resolve_weights(name, networks, weights, torch, lm_mask)
        loaded = {n: _network(n, p) for n, p in paths.items()}
        labels = _infer(run, ct, lm_mask, torch, {n: network for n, (network, _) in loaded.items()})
    info = {
        "weights": {n: {"path": str(paths[n]), "sha256": loaded[n][1]} for n in networks},
        "fill_holes": run.fill_holes,
        "device": device,
        "lungmask_version": _version("lungmask"),
        "torch_version": str(torch.__version__),
    }
    return _checked_region_map(labels, ct, name, info)


def _checked_region_map(labels: np.ndarray, ct: CTVolume, name: str, info: Mapping[str, object]) -> RegionMap:
    """The canonical region map of lungmask's labels; refuses labels off the CT grid or without any lung."""
    if labels.shape != ct.shape:
        raise SegmentationError(
            f"lungmask returned labels of shape {labels.shape} for {ct.meta.key} of shape "
            f"{ct.shape}. Potential fix: report this with the lungmask version "
            f"{_version('lungmask')}."
        )
    region_map = lungmask_labels_to_regions(labels, model=name, info=info)
    if not region_map.labels.any():
        raise SegmentationError(
            f"lungmask model {name!r} found no lung in {ct.meta.key} (shape {ct.shape}, HU range "
            f"[{int(ct.hu.min())}, {int(ct.hu.max())}]). Potential fix: check that the series "
            "covers the chest and its pixel values are HU, or use the threshold method."
        )
    return region_map


@dataclasses.dataclass(frozen=True)
class _LungmaskRun:
    """How one lungmask segmentation runs (model name, its networks and the inference options)."""

    name: str
    networks: tuple[str, ...]
    batch_size: int
    fill_holes: bool
    progress: bool
    device: str


def _check_arguments(ct: Any, batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(
            f"batch_size must be a positive integer; got {batch_size!r}. "
            "Potential fix: pass e.g. batch_size=20 (lower it when memory is short)."
        )
    if not isinstance(ct, CTVolume):
        raise InputError(
            f"segment_lungmask needs a CTVolume; got {type(ct).__name__}. "
            "Potential fix: read the scan with lungdamage.read_series or read_image first."
        )


def _infer(run: _LungmaskRun, ct: CTVolume, lm_mask: Any, torch: Any, models: Mapping[str, Any]) -> np.ndarray:
    """lungmask's inference (and fusion) on ``ct`` with our loaded networks; call inside :func:`_quarantine`."""
    base = run.networks[0]
    fill_name = run.networks[1] if len(run.networks) > 1 else None
    inferer = _make_inferer(
        lm_mask, torch,
        model=models[base],
        fill=models[fill_name] if fill_name else None,
        fill_name=fill_name,
        name=base,
        batch_size=run.batch_size,
        fill_holes=run.fill_holes,
        progress=run.progress,
        device=run.device,
    )
    log.info("lungmask %s on %s (%d slices, device %s)", run.name, ct.meta.key, ct.shape[0], run.device)
    try:
        with _lungmask_logs_to_logging():
            out = inferer.apply(ct.to_sitk())
    except (SystemExit, AssertionError, RuntimeError) as exc:
        raise SegmentationError(
            f"lungmask model {run.name!r} failed on {ct.meta.key} (shape {ct.shape}): "
            f"{type(exc).__name__}: {exc}. Potential fix: check that the input is a chest CT "
            "in HU; for memory errors lower batch_size."
        ) from exc
    return np.asarray(out)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"
