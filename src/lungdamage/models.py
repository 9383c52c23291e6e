"""lungmask weight files: download once, verify, find.

``lungdamage models download`` fetches lungmask's published weight files
into the folder lungmask itself reads them from, the torch hub checkpoint
cache (``torch.hub.get_dir()/checkpoints``: ``$TORCH_HOME/hub/checkpoints``,
by default ``~/.cache/torch/hub/checkpoints``).  lungmask's loader
(``torch.hub.load_state_dict_from_url``) then finds them there and never goes
to the network; :func:`lungdamage.segment.lungmask.segment_lungmask` reads
the same files.  Scoring never downloads anything.

Each file is checked before it is put in place:

- its SHA-256 must start with the hash prefix in its file name, the torch hub
  ``check_hash`` convention (``unet_r231-d5d2fc3d.pth`` -> ``d5d2fc3d...``);
- where a full digest is pinned (:data:`PINNED_SHA256`, or ``sha256=`` /
  ``--sha256 NETWORK=HEX``), the whole digest must match.

Transfers go to ``<file>.part`` in the same folder and are renamed into place
only once complete and verified (an interrupted or refused download never
leaves a file lungmask would load).  An interrupted transfer is resumed with
an HTTP ``Range`` request (or restarted when the server ignores it), within
one call (``retries``) and across calls (the ``.part`` file is kept).  Proxies
come from the usual environment variables (``https_proxy``, ``http_proxy``,
``no_proxy``), as :mod:`urllib.request` reads them.

The URLs are lungmask's own (``lungmask.mask.MODEL_URLS`` of the installed
lungmask; :data:`LUNGMASK_URLS` is the copy of lungmask 0.2.22 used when
lungmask is not installed).  ``base_url=`` or ``$LUNGDAMAGE_MODELS_URL``
replaces everything before the file name (a mirror, or a local server).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from ._files import file_sha256
from .errors import InputError, LungDamageError

__all__ = [
    "BASE_URL_ENV",
    "LUNGMASK_URLS",
    "MODEL_NETWORKS",
    "PINNED_SHA256",
    "ChecksumError",
    "DownloadError",
    "WeightFile",
    "download_weights",
    "list_weights",
    "verify_file",
    "weight_files",
    "weights_dir",
]

log = logging.getLogger(__name__)

#: lungmask network -> URL of its weight file, as in ``lungmask.mask.MODEL_URLS``
#: of lungmask 0.2.22 (used only when lungmask is not installed).
LUNGMASK_URLS: dict[str, str] = {
    "R231": "https://github.com/JoHof/lungmask/releases/download/v0.0/unet_r231-d5d2fc3d.pth",
    "LTRCLobes": "https://github.com/JoHof/lungmask/releases/download/v0.0/unet_ltrclobes-3a07043d.pth",
    "R231CovidWeb": "https://github.com/JoHof/lungmask/releases/download/v0.0/unet_r231covid-0de78a7e.pth",
}

#: Full SHA-256 digests pinned per weight file name.  Empty: lungmask publishes
#: only the 8-hex prefix in the file name, and no copy of the files was
#: reachable to pin more.  Pass ``sha256=`` (``--sha256``) to pin your own.
PINNED_SHA256: dict[str, str] = {}

#: Model names accepted by ``models download`` -> the networks they need
#: (as ``--model`` of ``score``: the fusion needs two files).
MODEL_NETWORKS: dict[str, tuple[str, ...]] = {
    "R231": ("R231",),
    "R231CovidWeb": ("R231CovidWeb",),
    "LTRCLobes": ("LTRCLobes",),
    "LTRCLobes_R231": ("LTRCLobes", "R231"),
}

#: Environment variable replacing the download location (everything before the file name).
BASE_URL_ENV = "LUNGDAMAGE_MODELS_URL"

# torch.hub.HASH_REGEX: the hash prefix is the hex run between '-' and '.'
_HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")
_CHUNK = 1 << 20


class DownloadError(LungDamageError):
    """A weight file could not be fetched (HTTP error, network failure, interrupted transfer)."""


class ChecksumError(DownloadError, ValueError):
    """A downloaded (or cached) weight file does not have the expected SHA-256."""


@dataclasses.dataclass(frozen=True)
class WeightFile:
    """One lungmask weight file.

    Attributes
    ----------
    network : str
        lungmask network name (``R231``, ``LTRCLobes``, ``R231CovidWeb``).
    url : str
        Where it is downloaded from.
    sha256 : str or None
        Full pinned digest (lower-case hex), if any.
    """

    network: str
    url: str
    sha256: str | None = None

    @property
    def filename(self) -> str:
        """File name in the cache (the last URL path component, as torch hub names it)."""
        return os.path.basename(urllib.parse.urlparse(self.url).path)

    @property
    def hash_prefix(self) -> str | None:
        """SHA-256 prefix in the file name (torch hub ``check_hash`` convention), or None."""
        m = _HASH_REGEX.search(self.filename)
        return m.group(1) if m and m.group(1) else None


def _lungmask_urls() -> dict[str, str]:
    """URLs from the installed lungmask (its ``MODEL_URLS``), else :data:`LUNGMASK_URLS`."""
    try:
        from .segment.lungmask import _import_backend, _quarantine

        with _quarantine():
            _, lm_mask, _ = _import_backend()
            return {str(k): str(v[0]) for k, v in lm_mask.MODEL_URLS.items()}
    except ImportError:  # MissingDependencyError is an ImportError
        return dict(LUNGMASK_URLS)


def weight_files(
    networks: Iterable[str] | None = None,
    *,
    base_url: str | None = None,
    sha256: Mapping[str, str] | None = None,
) -> dict[str, WeightFile]:
    """The weight files of lungmask networks or models.

    Parameters
    ----------
    networks : iterable of str, optional
        Network names (``R231``, ``LTRCLobes``, ``R231CovidWeb``), model names
        of :data:`MODEL_NETWORKS` (``LTRCLobes_R231`` -> both files) or
        ``all``.  Default: every network.
    base_url : str, optional
        Replaces the URL up to the file name (default ``$LUNGDAMAGE_MODELS_URL``
        if set, else lungmask's release URL).
    sha256 : mapping, optional
        Full digests to require, keyed by network or file name (added to
        :data:`PINNED_SHA256`).

    Returns
    -------
    dict
        network -> :class:`WeightFile`, in the order asked.

    Raises
    ------
    InputError
        An unknown name, or a digest that is not 64 hex digits.
    """
    urls = _lungmask_urls()
    wanted: list[str] = []
    for name in list(networks) if networks is not None else ["all"]:
        if name == "all":
            items = list(urls)
        elif name in urls:
            items = [name]
        elif name in MODEL_NETWORKS:
            items = list(MODEL_NETWORKS[name])
        else:
            allowed = sorted(set(urls) | set(MODEL_NETWORKS)) + ["all"]
            raise InputError(
                f"Unknown lungmask model {name!r}. Allowed: {', '.join(allowed)}. "
                "Potential fix: lungdamage models download LTRCLobes_R231 (true lobes) or R231 (lungs)."
            )
        wanted += [n for n in items if n not in wanted]
    base = base_url if base_url is not None else os.environ.get(BASE_URL_ENV) or None
    pins = {**PINNED_SHA256, **{str(k): str(v).lower() for k, v in (sha256 or {}).items()}}
    out = {}
    for n in wanted:
        url = urls[n]
        if base:
            url = base.rstrip("/") + "/" + os.path.basename(urllib.parse.urlparse(url).path)
        fname = os.path.basename(urllib.parse.urlparse(url).path)
        digest = pins.get(n) or pins.get(fname)
        if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise InputError(
                f"SHA-256 digest for {n} must be 64 hex digits; got {digest!r}. "
                "Potential fix: pass the full digest printed by sha256sum."
            )
        out[n] = WeightFile(n, url, digest)
    return out


def weights_dir() -> Path:
    """The folder lungmask loads weights from: ``torch.hub.get_dir()/checkpoints``.

    Without torch installed, torch's own rule is applied:
    ``$TORCH_HOME/hub/checkpoints``, ``$TORCH_HOME`` defaulting to
    ``$XDG_CACHE_HOME/torch`` (``~/.cache/torch``).
    """
    try:
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints"
    except ImportError:
        home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
        return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def _sha256(path: Path) -> str:
    return file_sha256(path)


def verify_file(path: str | os.PathLike, wf: WeightFile) -> tuple[bool, str, str]:
    """Check a file against the hash prefix in its name and any pinned digest.

    Returns
    -------
    (ok, sha256, reason)
        ``reason`` is empty when ``ok``, else says what did not match.
    """
    digest = _sha256(Path(path))
    if wf.sha256 is not None and digest != wf.sha256:
        return False, digest, f"SHA-256 {digest} is not the pinned {wf.sha256}"
    prefix = wf.hash_prefix
    if prefix is not None and not digest.startswith(prefix):
        return False, digest, f"SHA-256 {digest[:16]}... does not start with {prefix!r} (the hash in the file name)"
    return True, digest, ""


def _human(n_bytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} GB"  # pragma: no cover


def _fetch(wf: WeightFile, part: Path, *, timeout_s: float, progress: bool) -> int:
    """Fetch ``wf.url`` into ``part``, resuming from its current size; returns the total size.

    Raises ``urllib.error.HTTPError`` / ``URLError`` / ``OSError`` (the caller
    retries or reports) and :class:`DownloadError` for a short body.
    """
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(wf.url, headers={"User-Agent": "lungdamage", "Accept-Encoding": "identity"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        # a fresh opener reads the proxy variables (https_proxy, no_proxy, ...) as they are now
        resp = urllib.request.build_opener().open(req, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part is not a prefix of this file: start again
            exc.close()
            log.info("%s: server refused to resume at byte %d; starting again", wf.filename, have)
            part.unlink()
            return _fetch(wf, part, timeout_s=timeout_s, progress=progress)
        raise
    with resp:
        length = resp.headers.get("Content-Length")
        if resp.status == 206:
            m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                raise DownloadError(
                    f"{wf.url}: the server resumed at {resp.headers.get('Content-Range')!r} instead of byte {have}. "
                    f"Potential fix: delete {part} and run the download again."
                )
            total = int(m.group(2)) if m.group(2) != "*" else (have + int(length) if length else None)
            mode = "ab"
            log.info("%s: resuming at %s", wf.filename, _human(have))
        else:  # 200: the server sent the whole file (no resume support): start again
            if have:
                log.info("%s: server does not resume; starting again", wf.filename)
            have = 0
            total = int(length) if length else None
            mode = "wb"
        from tqdm import tqdm

        with open(part, mode) as fh, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=wf.filename, disable=not progress, leave=False,
        ) as bar:
            got = have
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                fh.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and got != total:
        raise DownloadError(f"{wf.url}: transfer ended at {got} of {total} bytes")
    return got


@dataclasses.dataclass(frozen=True)
class DownloadResult:
    """What :func:`download_weights` did for one network."""

    network: str
    path: Path
    url: str
    size_bytes: int
    sha256: str
    action: str  # "downloaded" or "present"


def download_weights(
    networks: Iterable[str] | None = ("LTRCLobes", "R231"),
    *,
    directory: str | os.PathLike | None = None,
    base_url: str | None = None,
    sha256: Mapping[str, str] | None = None,
    force: bool = False,
    retries: int = 3,
    timeout_s: float = 60.0,
    progress: bool = False,
) -> list[DownloadResult]:
    """Download lungmask weight files into the cache lungmask reads, verified.

    Parameters
    ----------
    networks : iterable of str
        Networks or models (see :func:`weight_files`); default the two files of
        ``LTRCLobes_R231`` (true lobes).
    directory : path, optional
        Target folder (default :func:`weights_dir`, where lungmask looks).
    base_url, sha256
        See :func:`weight_files`.
    force : bool
        Download again even when a verified file is present.
    retries : int
        Extra attempts after an interrupted transfer or a network error, each
        resuming where the last stopped (HTTP errors are not retried).
    timeout_s : float
        Socket timeout (seconds) per read.
    progress : bool
        Show a tqdm progress bar (stderr).

    Returns
    -------
    list of DownloadResult

    Raises
    ------
    DownloadError
        HTTP error, unreachable server, or a transfer still incomplete after
        ``retries`` (the ``.part`` file is kept: the next call resumes).
    ChecksumError
        The file does not have the expected SHA-256 (nothing is left behind).
    """
    files = weight_files(networks, base_url=base_url, sha256=sha256)
    folder = Path(directory) if directory is not None else weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for wf in files.values():
        dest = folder / wf.filename
        if dest.is_file() and not force:
            ok, digest, why = verify_file(dest, wf)
            if ok:
                log.info("%s: present and verified in %s", wf.filename, folder)
                results.append(DownloadResult(wf.network, dest, wf.url, dest.stat().st_size, digest, "present"))
                continue
            log.warning("%s in %s does not verify (%s); downloading it again", wf.filename, folder, why)
        with _folder_lock(folder):
            results.append(
                _download_one(wf, dest, force=force, retries=retries, timeout_s=timeout_s, progress=progress)
            )
    return results


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """One download per weights folder at a time (``flock`` on the folder; a no-op where unsupported)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(
                f"Another lungdamage models download is writing to {folder}. "
                "Potential fix: wait for it to finish, then run the command again."
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _download_one(wf: WeightFile, dest: Path, *, force: bool, retries: int, timeout_s: float,
                  progress: bool) -> DownloadResult:
    folder = dest.parent
    if dest.is_file() and not force:  # a concurrent download may have finished it while we waited
        ok, digest, _ = verify_file(dest, wf)
        if ok:
            return DownloadResult(wf.network, dest, wf.url, dest.stat().st_size, digest, "present")
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            size = _fetch(wf, part, timeout_s=timeout_s, progress=progress)
            break
        except urllib.error.HTTPError as exc:
            exc.close()  # the error response holds the socket
            raise DownloadError(
                f"Download of lungmask {wf.network} weights failed: HTTP {exc.code} {exc.reason} from {wf.url}. "
                f"Potential fix: check the URL (--base-url / ${BASE_URL_ENV}) or try again later."
            ) from None
        except (urllib.error.URLError, OSError, DownloadError) as exc:
            reason = getattr(exc, "reason", None) or exc
            attempt += 1
            if attempt > retries:
                have = part.stat().st_size if part.exists() else 0
                kept = f"; {_human(have)} kept in {part}" if have else ""
                raise DownloadError(
                    f"Download of lungmask {wf.network} weights from {wf.url} failed after {attempt} attempt(s): "
                    f"{reason}{kept}. Potential fix: check the network or proxy (https_proxy) and run the same "
                    "command again" + (" to resume." if have else ".")
                ) from None
            log.warning("%s: %s; retrying (%d of %d)", wf.filename, reason, attempt, retries)
            time.sleep(min(0.2 * attempt, 2.0))
    ok, digest, why = verify_file(part, wf)
    if not ok:
        part.unlink()
        raise ChecksumError(
            f"Downloaded lungmask {wf.network} weights from {wf.url} are not the published file: {why}; "
            f"deleted, nothing written to {folder}. Potential fix: try again; if it persists, the server "
            "or a proxy serves a different file."
        )
    os.replace(part, dest)  # atomic within one folder
    log.info("%s: %s downloaded to %s, SHA-256 %s", wf.network, _human(size), dest, digest)
    return DownloadResult(wf.network, dest, wf.url, size, digest, "downloaded")


def list_weights(
    *,
    directory: str | os.PathLike | None = None,
    base_url: str | None = None,
    sha256: Mapping[str, str] | None = None,
    verify: bool = True,
):
    """Which lungmask weight files are present, where, and whether they verify.

    Returns
    -------
    pandas.DataFrame
        One row per network: ``network``, ``models`` (the ``--model`` names
        that need it), ``file``, ``present``, ``size_bytes``, ``verified``
        (True/False, None when absent or ``verify=False``), ``sha256``,
        ``problem`` and ``path``.
    """
    import pandas as pd

    folder = Path(directory) if directory is not None else weights_dir()
    rows = []
    for wf in weight_files(None, base_url=base_url, sha256=sha256).values():
        path = folder / wf.filename
        present = path.is_file()
        ok, digest, why = verify_file(path, wf) if present and verify else (None, "", "")
        rows.append({
            "network": wf.network,
            "models": ", ".join(m for m, nets in MODEL_NETWORKS.items() if wf.network in nets),
            "file": wf.filename,
            "present": present,
            "size_bytes": path.stat().st_size if present else 0,
            "verified": ok,
            "sha256": digest,
            "problem": why if present else "absent",
            "path": str(path),
        })
    return pd.DataFrame(rows)
