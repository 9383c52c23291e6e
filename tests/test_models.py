"""``lungdamage models download|list`` against a local HTTP server (no internet).

The server (``http.server`` on 127.0.0.1, in a thread) serves a randomly
initialised state dict of lungmask's own U-Net under a torch-hub style name
``unet_r231-<first 8 hex of its SHA-256>.pth``; lungmask's ``MODEL_URLS`` is
pointed at it, as if lungmask had published that file there.  It can answer
with an HTTP error, cut a response off mid-body, or ignore ``Range``.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lungmask")

import lungmask.mask as lm_mask  # noqa: E402
from lungmask.resunet import UNet  # noqa: E402

from lungdamage import models  # noqa: E402
from lungdamage.cli import main  # noqa: E402
from lungdamage.models import (  # noqa: E402
    ChecksumError,
    DownloadError,
    download_weights,
    list_weights,
)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server  # type: ignore[assignment]

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        plan = srv.plan.pop(0) if srv.plan else "ok"
        if isinstance(plan, int):
            self.send_error(plan)
            return
        data = srv.files.get(self.path.rsplit("/", 1)[-1])
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and plan != "ignore_range":
            start = int(m.group(1))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if isinstance(plan, tuple) and plan[0] == "cut":  # promise the whole body, send part of it, hang up
            self.wfile.write(body[: plan[1]])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.plan: list = []
        self.requests: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/weights"


@pytest.fixture(scope="module")
def r231_bytes() -> bytes:
    """A random state dict of lungmask's R231 network (same constructor as lungmask.mask.get_model)."""
    torch.manual_seed(0)
    net = UNet(n_classes=3, padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def site(server, r231_bytes, tmp_path, monkeypatch):
    """lungmask's R231 URL -> the local server; TORCH_HOME -> a fresh folder. Returns (server, name, cache dir)."""
    name = f"unet_r231-{hashlib.sha256(r231_bytes).hexdigest()[:8]}.pth"
    server.files = {name: r231_bytes}
    server.plan, server.requests = [], []
    monkeypatch.setitem(lm_mask.MODEL_URLS, "R231", (f"{server.url}/{name}", 3))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(models.BASE_URL_ENV, raising=False)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    return server, name, tmp_path / "torch" / "hub" / "checkpoints"


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.slow
def test_download_verifies_and_lungmask_finds_it_offline(site, r231_bytes, monkeypatch):
    server, name, cache = site
    (res,) = download_weights(["R231"])
    assert res.action == "downloaded" and res.path == cache / name
    assert res.size_bytes == len(r231_bytes) and res.sha256 == hashlib.sha256(r231_bytes).hexdigest()
    assert (cache / name).read_bytes() == r231_bytes
    assert _files(cache) == [name]  # no temporary file left
    # a second call finds the verified file and does not go to the server
    (again,) = download_weights(["R231"])
    assert again.action == "present" and len(server.requests) == 1

    # lungmask's own loader, with the network cut off, loads exactly the served weights
    def no_network(*args, **kwargs):
        raise AssertionError(f"lungmask went to the network: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    inferer = lm_mask.LMInferer(modelname="R231", force_cpu=True, tqdm_disable=True)
    served = torch.load(io.BytesIO(r231_bytes), weights_only=True)
    loaded = inferer.model.state_dict()
    assert list(loaded) == list(served)
    assert all(torch.equal(loaded[k], served[k]) for k in served)


@pytest.mark.slow
def test_checksum_mismatch_is_refused_and_nothing_left(site, r231_bytes):
    server, name, cache = site
    bad = bytearray(r231_bytes)
    bad[len(bad) // 2] ^= 0xFF  # one flipped byte: same size, other SHA-256
    server.files[name] = bytes(bad)
    with pytest.raises(ChecksumError, match="does not start with"):
        download_weights(["R231"])
    assert _files(cache) == []
    # the right bytes, but a full pinned digest they do not match
    server.files[name] = r231_bytes
    with pytest.raises(ChecksumError, match="pinned"):
        download_weights(["R231"], sha256={"R231": "0" * 64})
    assert _files(cache) == []
    # and the right pinned digest is accepted
    (res,) = download_weights(["R231"], sha256={"R231": hashlib.sha256(r231_bytes).hexdigest()})
    assert res.path.read_bytes() == r231_bytes


def test_interrupted_transfer_is_resumed_with_range(site, r231_bytes, capsys):
    server, name, cache = site
    cut = 3_000_000
    server.plan = [("cut", cut)]
    (res,) = download_weights(["R231"], retries=2, progress=True)  # the tqdm bar resumes at the cut too
    assert res.path.read_bytes() == r231_bytes
    assert [r for _, r in server.requests] == [None, f"bytes={cut}-"]
    assert _files(cache) == [name]
    assert name in capsys.readouterr().err  # progress on stderr, named by file


def test_interrupted_transfer_restarts_when_server_ignores_range(site, r231_bytes):
    server, name, cache = site
    server.plan = [("cut", 2_000_000), "ignore_range"]
    (res,) = download_weights(["R231"], retries=2)
    assert res.path.read_bytes() == r231_bytes
    assert len(server.requests) == 2 and _files(cache) == [name]


def test_interrupted_download_resumes_on_the_next_call(site, r231_bytes):
    server, name, cache = site
    cut = 5_000_000
    server.plan = [("cut", cut)]
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download_weights(["R231"], retries=0)
    assert _files(cache) == [name + ".part"]  # nothing lungmask would load
    assert (cache / (name + ".part")).stat().st_size == cut
    (res,) = download_weights(["R231"])
    assert res.path.read_bytes() == r231_bytes
    assert server.requests[-1][1] == f"bytes={cut}-" and _files(cache) == [name]


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors_are_one_clear_error(site, status):
    server, name, cache = site
    server.plan = [status]
    with pytest.raises(DownloadError, match=f"HTTP {status}") as info:
        download_weights(["R231"])
    assert name in str(info.value) and "\n" not in str(info.value)
    assert _files(cache) == []


@pytest.mark.slow
def test_cli_download_and_list(site, r231_bytes, capsys, monkeypatch):
    server, name, cache = site
    # lungmask's URL on an unreachable host; --base-url points at the mirror
    monkeypatch.setitem(lm_mask.MODEL_URLS, "R231", (f"https://example.invalid/v0.0/{name}", 3))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert str(cache) in out and re.search(rf"R231\s+{re.escape(name)}\s+absent", out)
    assert "lungdamage models download R231" in out

    assert main(["-q", "models", "download", "R231", "--base-url", server.url]) == 0
    out = capsys.readouterr().out
    assert f"{len(r231_bytes) / 1e6:.1f} MB" in out and str(cache / name) in out
    assert main(["models", "list"]) == 0
    assert re.search(rf"R231\s+{re.escape(name)}\s+present, [\d.]+ MB, verified", capsys.readouterr().out)
    df = list_weights()
    assert bool(df.set_index("network").loc["R231", "verified"])

    # a damaged cached file is reported, and the exit code says so
    (cache / name).write_bytes(b"x" + r231_bytes[1:])
    assert main(["models", "list"]) == 1
    assert "DOES NOT VERIFY" in capsys.readouterr().out

    # errors: one line, exit code 2
    server.plan = [500]
    assert main(["models", "download", "R231", "--force", "--base-url", server.url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lungdamage models: error:") and "HTTP 500" in err and "\n" not in err


def test_proxy_from_the_environment_is_used(site, r231_bytes, monkeypatch):
    server, name, _ = site
    # an unresolvable host, reachable only through the proxy (the local server answers as one)
    monkeypatch.setitem(lm_mask.MODEL_URLS, "R231", (f"http://weights.invalid/v0.0/{name}", 3))
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{server.server_address[1]}")
    (res,) = download_weights(["R231"])
    assert res.path.read_bytes() == r231_bytes
    assert server.requests == [(f"http://weights.invalid/v0.0/{name}", None)]  # absolute URI: a proxy request


def test_one_download_per_folder_at_a_time(site):
    import fcntl
    import os

    server, _, cache = site
    cache.mkdir(parents=True)
    fd = os.open(cache, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a concurrent `models download` holds it
        with pytest.raises(DownloadError, match="Another lungdamage models download is writing"):
            download_weights(["R231"])
    finally:
        os.close(fd)
    assert server.requests == [] and _files(cache) == []
    assert download_weights(["R231"])[0].action == "downloaded"


def test_urls_and_cache_folder_are_lungmasks(monkeypatch, tmp_path):
    # the copy used without lungmask installed is lungmask's own table
    assert models.LUNGMASK_URLS == {k: v[0] for k, v in lm_mask.MODEL_URLS.items()}
    files = models.weight_files(["LTRCLobes_R231"])
    assert [f.filename for f in files.values()] == ["unet_ltrclobes-3a07043d.pth", "unet_r231-d5d2fc3d.pth"]
    assert [f.hash_prefix for f in files.values()] == ["3a07043d", "d5d2fc3d"]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert models.weights_dir() == Path(torch.hub.get_dir()) / "checkpoints" == tmp_path / "th" / "hub" / "checkpoints"
    # the segmentation backend looks in the same place
    from lungdamage.segment.lungmask import lungmask_weights_path

    assert lungmask_weights_path("R231")["R231"] == models.weights_dir() / "unet_r231-d5d2fc3d.pth"
    monkeypatch.setenv(models.BASE_URL_ENV, "http://mirror.example/lm/")
    assert models.weight_files(["R231"])["R231"].url == "http://mirror.example/lm/unet_r231-d5d2fc3d.pth"


def test_missing_weights_error_names_the_download_command(monkeypatch, tmp_path):
    from lungdamage.phantom import make_phantom
    from lungdamage.segment.lungmask import MissingWeightsError, segment_lungmask

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    ct = make_phantom(slice_thickness_mm=10.0, matrix=64, vessels=False, seed=0).ct
    with pytest.raises(MissingWeightsError, match="lungdamage models download LTRCLobes_R231"):
        segment_lungmask(ct, model="LTRCLobes_R231")
