"""A real Orthanc (with its DICOMweb plugin) for the tests, and a fault-injecting HTTP proxy.

:class:`OrthancServer` starts ``Orthanc`` on 127.0.0.1 with a temporary JSON
configuration (free HTTP port, DICOM server off, temporary storage, DICOMweb
plugin, one registered user with a random password) and stops it again.
:class:`FaultProxy` forwards HTTP to it and answers chosen requests with
HTTP 500, as a failing PACS would.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.path.isfile(p)), None)


def dicomweb_plugin() -> str | None:
    for p in PLUGIN_CANDIDATES:
        if os.path.isfile(p):
            return p
    for p in sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")) if Path("/usr/lib/orthanc").is_dir() else []:
        return str(p)
    return None


def missing_reason() -> str | None:
    """Why Orthanc tests cannot run here (None when they can)."""
    if orthanc_binary() is None:
        return "Orthanc is not installed (Debian: apt-get install orthanc orthanc-dicomweb)"
    if dicomweb_plugin() is None:
        return "the Orthanc DICOMweb plugin is not installed (Debian: apt-get install orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OrthancServer:
    """One Orthanc process with a temporary configuration and storage."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.user = "lungdamage-test"
        self.password = "pw-" + secrets.token_hex(12)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The DICOMweb source URL lungdamage takes."""
        return f"dicomweb+{self.http}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    def start(self, timeout_s: float = 30.0) -> None:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "lungdamage-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.port,
            "DicomServerEnabled": False,
            "DicomPort": free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
            "StorageCompression": False,
            "HttpTimeout": 60,
        }
        cfg = self.workdir / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=1))
        self.log = open(self.workdir / "orthanc.log", "ab")  # noqa: SIM115 (open while the server runs)
        self.proc = subprocess.Popen([orthanc_binary(), str(cfg)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with code {self.proc.returncode}; see {self.workdir / 'orthanc.log'}")
            try:
                if requests.get(f"{self.http}/system", auth=self.auth, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout_s} s; see {self.workdir / 'orthanc.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()

    def upload(self, folder: Path) -> int:
        """POST every file under ``folder`` to ``/instances``; returns the number stored."""
        n = 0
        with requests.Session() as s:
            s.auth = self.auth
            for path in sorted(Path(folder).rglob("*.dcm")):
                r = s.post(f"{self.http}/instances", data=path.read_bytes(), timeout=30)
                r.raise_for_status()
                n += 1
        return n


class FaultProxy:
    """HTTP proxy on 127.0.0.1 in front of ``upstream``; ``fail(method, path)`` True -> HTTP 500."""

    def __init__(self, upstream_port: int, fail):
        self.upstream_port = upstream_port
        self.fail = fail
        self.hits: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                body = None
                if "Content-Length" in self.headers:
                    body = self.rfile.read(int(self.headers["Content-Length"]))
                if proxy.fail(self.command, self.path):
                    proxy.hits.append(self.path)
                    msg = b"injected failure"
                    self.send_response(500, "Internal Server Error")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"dicomweb+http://127.0.0.1:{self.port}/dicom-web"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
