"""Session fixture: a real Orthanc with the DICOMweb plugin, loaded with the sample trial (``sample_dicom/``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _orthanc import OrthancServer, missing_reason

SAMPLE = Path(__file__).resolve().parents[2] / "sample_dicom"


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    why = missing_reason()
    if why:
        pytest.skip(why)
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    server.start()
    try:
        n = server.upload(SAMPLE)
        assert n == 256, f"expected the 4 x 64 sample instances, stored {n}"
        yield server
    finally:
        server.stop()


@pytest.fixture
def dicomweb_env(orthanc, monkeypatch):
    """Credentials of the test Orthanc in the environment, as a user would set them."""
    pytest.importorskip("dicomweb_client", reason="dicomweb-client is not installed (pip install 'lungdamage[dicomweb]')")
    from lungdamage.io.dicomweb import ENV_CONFIG, ENV_PASSWORD, ENV_TOKEN, ENV_USER

    monkeypatch.setenv(ENV_USER, orthanc.user)
    monkeypatch.setenv(ENV_PASSWORD, orthanc.password)
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    return orthanc


@pytest.fixture
def sample_root():
    return SAMPLE
