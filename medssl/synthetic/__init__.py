"""The built-in synthetic cohorts: phantom CT torsos and MR heads written as a hospital-like archive.

Imports only :mod:`medssl.io` and :mod:`medssl.utils`; nothing in the library depends on it except
the ``medssl synth`` / ``medssl demo`` commands (tests and benchmarks use it for data).

* :mod:`~medssl.synthetic.cohort` - :func:`make_synthetic_cohort`, the cohort of ``medssl demo``;
* :mod:`~medssl.synthetic.tiny` - tiny single images for tests (:func:`make_tiny_ct_series`,
  :func:`make_tiny_mr_nifti`, :func:`make_ct_phantom`, :func:`make_mr_phantom`);
* :mod:`~medssl.synthetic.fields` - random smooth fields in world millimetres, textures, solids;
* :mod:`~medssl.synthetic.scan_geometry` - voxel grids placed in the world (CT storage variants,
  NIfTI axis codes, oblique planes);
* :mod:`~medssl.synthetic.ct_torso` - the CT torso phantom (anatomy, Hounsfield table, labels);
* :mod:`~medssl.synthetic.mr_brain` - the MR head phantom (anatomy, sequences, bias, Rician noise);
* :mod:`~medssl.synthetic.acquisition` - grid sizes, geometry draws, DICOM and NIfTI writers;
* :mod:`~medssl.synthetic.identities` - invented patient identities for the DICOM headers;
* :mod:`~medssl.synthetic.export_clutter` - structured reports, truncated files, OS junk.

Example:
    >>> from medssl.synthetic import make_ct_phantom
    >>> make_ct_phantom(0, shape=(16, 16, 10))[0].array.shape
    (1, 16, 16, 10)
"""

from medssl.synthetic.cohort import CT_LABELS, LABEL_COLUMNS, MR_LABELS, CohortInfo, make_synthetic_cohort
from medssl.synthetic.tiny import make_ct_phantom, make_mr_phantom, make_tiny_ct_series, make_tiny_mr_nifti

__all__ = [
    "CT_LABELS",
    "LABEL_COLUMNS",
    "MR_LABELS",
    "CohortInfo",
    "make_ct_phantom",
    "make_mr_phantom",
    "make_synthetic_cohort",
    "make_tiny_ct_series",
    "make_tiny_mr_nifti",
]
