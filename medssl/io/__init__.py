"""Files to :class:`Volume`: NIfTI, DICOM series and single DICOM files, de-identified."""

from medssl.io.volume import Volume

__all__ = ["Volume"]
