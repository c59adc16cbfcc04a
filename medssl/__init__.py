"""medssl: self-supervised learning for medical images.

From a hospital archive (DICOM series, NIfTI files) to a de-identified manifest, self-supervised
pretraining of 2D/3D encoders, and a measured label-efficiency study.
"""

__version__ = "0.1.0"
