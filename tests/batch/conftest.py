"""Fixtures of the batch tests (the archive itself is built in ``_batchdata.py``,
a uniquely named module the tests and worker processes can import)."""

from _batchdata import archive, reference_store  # noqa: F401  (fixtures)
