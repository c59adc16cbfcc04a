"""Building blocks of the built-in synthetic cohort (:mod:`medssl.data.synthetic`).

* :mod:`~medssl.data.phantoms.fields` - random smooth fields in world millimetres, textures, solids;
* :mod:`~medssl.data.phantoms.scan_geometry` - voxel grids placed in the world (CT storage variants,
  NIfTI axis codes, oblique planes);
* :mod:`~medssl.data.phantoms.ct_torso` - the CT torso phantom (anatomy, Hounsfield table, labels);
* :mod:`~medssl.data.phantoms.mr_brain` - the MR head phantom (anatomy, sequences, bias, Rician noise);
* :mod:`~medssl.data.phantoms.acquisition` - grid sizes, geometry draws, DICOM and NIfTI writers;
* :mod:`~medssl.data.phantoms.identities` - invented patient identities for the DICOM headers;
* :mod:`~medssl.data.phantoms.export_clutter` - structured reports, truncated files, OS junk.
"""
