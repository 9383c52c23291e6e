"""Scoring: HU band schemes, the vectorized kernel and :class:`ScanResult`.

The verbs are :func:`score` (one scheme -> :class:`ScanResult`) and
:func:`score_many` (several schemes from one pass -> :class:`ResultSet`),
defined in :mod:`lungdamage.score._score`.  Names load on first use
(``lazy_loader``; the public names are listed in ``__init__.pyi``), so that
``import lungdamage`` does not import scipy.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
