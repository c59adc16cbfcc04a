"""Files to :class:`Volume`: NIfTI, DICOM series and single DICOM files, de-identified.

Public API: :func:`load_volume`, :func:`save_volume`, :class:`Volume`; :mod:`medssl.io.deid` for
pseudonyms; :mod:`medssl.io.dicom_write` writes DICOM series (tests, synthetic data).
"""

from medssl.io.load import load_volume
from medssl.io.nifti import save_volume
from medssl.io.volume import Volume

__all__ = ["Volume", "load_volume", "save_volume"]
