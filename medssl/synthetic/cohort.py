"""The built-in synthetic hospital cohort: CT torsos as DICOM series, MR brains as NIfTI, masks, labels.

:func:`make_synthetic_cohort` writes a small, deterministic cohort (the same seed gives byte-identical
files) that looks like what a research group receives from its hospital: a PACS export of abdominal
CT studies (some patients scanned twice), a folder of brain MR converted to NIfTI, a segmentation
mask per annotated case, a case-level label table, and, unless ``messy=False``, the clutter of a real
export. It is the data of ``medssl demo`` and of many tests.

Layout of ``out_dir``::

    archive/                         what `medssl manifest` scans (the "PACS export")
      CT/PAT0001/ST01_CT_ABDOMEN/SE0002_PORTAL_VENOUS/IM000001.dcm ...
      CT/PAT0001/ST02_CT_ABDOMEN/...                   a follow-up study of the same patient
      CT/<FAMILY^GIVEN_ID>/<date>_<accession>/DICOM/SE0002_.../00000001   patient-named folders
                                                       (unlabeled patients, messy only)
      MR/sub-0001/ses-01/anat/sub-0001_ses-01_T1w.nii.gz
    masks/ct_0001_seg.nii.gz, mr_0001_seg.nii.gz       integer label masks (NIfTI, uint8)
    labels.csv                                         one row per annotated case
    cohort.json                                        parameters, label maps, intensity tables

``labels.csv`` columns: ``case_id``, ``patient_key`` (a pseudonym of the synthetic patient, never
the DICOM PatientID), ``visit`` (1 baseline, 2 follow-up), ``image`` (the series folder or the
``.nii.gz``, relative to ``out_dir``), ``mask`` (relative path), ``label`` (1 when the mask holds a
lesion, else 0; balanced per modality), ``modality`` (CT, MR), ``body_part`` (ABDOMEN, BRAIN),
``contrast`` (plain/venous or T1w/T2w/FLAIR), ``geometry`` (storage variant), ``orientation``
(axis codes of the stored array), ``spacing_x/y/z`` (mm), ``lesion_voxels``. It holds no name, ID,
birth date or accession number; images of unlabeled patients are not listed (find them with
``medssl manifest``), and neither are the messy files.

The anatomy models, Hounsfield table and MR intensity table are documented in
:mod:`medssl.synthetic.ct_torso` and :mod:`medssl.synthetic.mr_brain`. Label maps:

* CT (:data:`CT_LABELS`): 0 background, 1 liver, 2 kidneys, 3 spleen, 4 lesion;
* MR (:data:`MR_LABELS`): 0 background, 1 CSF (ventricles and subarachnoid), 2 grey matter,
  3 white matter, 4 lesion.

Geometry (:mod:`medssl.synthetic.acquisition`): a CT grid of ``nx x ny x nz`` voxels has the
in-plane spacing of a 512-matrix scan at 0.7-0.9 mm scaled to ``nx`` (``s = u * 512 / nx``, so
5.6-7.2 mm at 64) and slices of ``coverage / nz`` with a 320-420 mm coverage (lower chest to
pelvis), so 8-10.5 mm at 40 slices.
Stored orientations cycle through standard axial (LPS), reversed slice order, a mirrored row axis,
feet-first and oblique (gantry tilt 8-20 degrees). MR grids have ~220 mm fields of view
(``u * 220 / n``, isotropic or with 1.3x thicker slices) stored as RAS, LAS, LPS, LIA, PIR or
oblique. Masks are written with the image's affine on the image's stored grid, so after loading
both with :func:`medssl.io.load_volume` (which reorients to RAS+) they are voxel-aligned.

``messy=True`` adds: ``README.txt``, ``.DS_Store`` and ``Thumbs.db`` files, a DICOM Structured
Report (no pixels) in a labeled study, a truncated DICOM file in a series folder of its own,
patient-named folders with an extra ``DICOM/`` level, series whose files have no extension,
shuffled and reversed InstanceNumbers, BIDS JSON sidecars beside the NIfTI files, an uncompressed
``.nii`` and a NIfTI stored with a non-unit ``scl_slope``.

Speed: the default cohort (24 CT of 64x64x40, 8 MR of 48^3, 8 + 4 unlabeled: 44 volumes, ~1300
files, 18 MB) takes about 8 s of CPU on one core (rendering is vectorised NumPy/SciPy; about a third
is pydicom writing the slices).

Example:
    >>> import tempfile, pathlib
    >>> info = make_synthetic_cohort(pathlib.Path(tempfile.mkdtemp()) / "cohort", n_ct=4, n_mr=2,
    ...                              n_unlabeled_ct=1, n_unlabeled_mr=0, size=24, progress=False)
    >>> list(info.labels.columns[:6])
    ['case_id', 'patient_key', 'visit', 'image', 'mask', 'label']
    >>> info.n_ct, info.n_mr
    (4, 2)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medssl.synthetic.acquisition import (
    ct_grid_shape,
    ct_nominal_spacing,
    draw_ct_geometry,
    draw_mr_geometry,
    mr_grid_shape,
    mr_nominal_spacing,
    study_uid,
    write_ct_series,
    write_label_nifti,
    write_nifti,
)
from medssl.synthetic.ct_torso import (
    CT_HU_TABLE,
    CT_LABELS,
    draw_torso_anatomy,
    follow_up_anatomy,
    redraw_torso_lesions,
    render_torso_ct,
)
from medssl.synthetic.export_clutter import write_os_junk, write_text_report, write_truncated_copy
from medssl.synthetic.identities import FakeIdentity, draw_accession, draw_identity, draw_study_date
from medssl.synthetic.mr_brain import (
    MR_INTENSITY_TABLE,
    MR_LABELS,
    MR_SEQUENCES,
    draw_brain_anatomy,
    follow_up_brain,
    redraw_brain_lesions,
    render_brain_mr,
)
from medssl.synthetic.scan_geometry import ScanGeometry
from medssl.errors import ConfigError, DataError
from medssl.utils.atomic import atomic_write_text
from medssl.utils.logging import progress_bar
from medssl.utils.seeding import make_rng

log = logging.getLogger(__name__)

__all__ = [
    "CT_LABELS",
    "MR_LABELS",
    "CohortInfo",
    "LABEL_COLUMNS",
    "make_synthetic_cohort",
]

COHORT_VERSION = 1
_LESION_RETRIES = 6
LABEL_COLUMNS = (
    "case_id", "patient_key", "visit", "image", "mask", "label", "modality", "body_part", "contrast",
    "geometry", "orientation", "spacing_x", "spacing_y", "spacing_z", "lesion_voxels",
)
# storage variants, cycled over cases so every cohort of a few cases holds each kind
CT_GEOMETRY_CYCLE = ("standard", "oblique", "reversed", "standard", "flipped_lr", "feet_first")
MR_GEOMETRY_CYCLE = ("RAS", "LAS", "oblique", "LPS", "LIA", "PIR")
MR_SEQUENCE_CYCLE = ("T1w", "T2w", "T1w", "FLAIR")


@dataclass
class CohortInfo:
    """What :func:`make_synthetic_cohort` wrote: folders, the label table and counts."""

    root: Path
    archive_dir: Path
    masks_dir: Path
    labels_csv: Path
    seed: int
    n_ct: int
    n_mr: int
    n_unlabeled: int
    n_patients: int
    labels: pd.DataFrame
    unlabeled_images: list[Path] = field(default_factory=list)
    messy_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """A few lines for the command line."""
        positives = int(self.labels["label"].sum()) if len(self.labels) else 0
        return (
            f"{self.n_ct} CT + {self.n_mr} MR annotated cases ({positives} with a lesion) from "
            f"{self.n_patients} patients, {self.n_unlabeled} unlabeled volumes, "
            f"{len(self.messy_files)} messy export files, written in {self.seconds:.1f} s\n"
            f"labels: {self.labels_csv}\n"
            f"archive to scan: medssl manifest {self.archive_dir} --out {self.root / 'manifest.csv'}"
        )


# --------------------------------------------------------------------------------------------
# pseudonyms


def patient_pseudonym(seed: int, modality: str, patient_index: int) -> str:
    """The synthetic patient's pseudonym in labels.csv: ``P`` and 12 hex digits of a hash of the
    cohort seed and the patient's index (not of any identifier written in the headers)."""
    digest = hashlib.blake2b(f"medssl-synthetic/{seed}/{modality}/{patient_index}".encode(), digest_size=6)
    return "P" + digest.hexdigest()


# --------------------------------------------------------------------------------------------
# the cohort


@dataclass
class _Patient:
    modality: str
    index: int
    labeled: bool
    lesion: bool
    visits: int
    identity: FakeIdentity


def _plan_patients(n_cases: int, n_unlabeled: int, modality: str, seed: int) -> list[_Patient]:
    """Patients for ``n_cases`` annotated cases (a quarter of them follow-ups of earlier patients)
    and ``n_unlabeled`` single-visit unlabeled patients; lesions assigned so that about half of the
    annotated cases hold one."""
    n_follow_up = n_cases // 4
    n_labeled_patients = n_cases - n_follow_up
    follow_up_order = make_rng(seed, modality, "follow-up-plan").permutation(n_labeled_patients)
    with_follow_up = set(follow_up_order[:n_follow_up].tolist())
    visits = [2 if p in with_follow_up else 1 for p in range(n_labeled_patients)]
    order = make_rng(seed, modality, "lesion-plan").permutation(n_labeled_patients)
    lesion = [False] * n_labeled_patients
    target = n_cases // 2 + (n_cases % 2) * int(make_rng(seed, modality, "odd").integers(0, 2))
    positive_cases = 0
    for p in order:
        if positive_cases + visits[p] <= target:
            lesion[p] = True
            positive_cases += visits[p]
    patients = []
    for p in range(n_labeled_patients + n_unlabeled):
        labeled = p < n_labeled_patients
        identity = draw_identity(make_rng(seed, modality, p, "identity"))
        has_lesion = lesion[p] if labeled else bool(make_rng(seed, modality, p, "lesion").uniform() < 0.5)
        patients.append(_Patient(modality, p, labeled, has_lesion, visits[p] if labeled else 1, identity))
    return patients


def _check_request(n_ct: int, n_mr: int, n_unlabeled_ct: int, n_unlabeled_mr: int,
                   ct_shape: tuple[int, int, int], mr_shape: tuple[int, int, int]) -> None:
    for name, value in (("n_ct", n_ct), ("n_mr", n_mr), ("n_unlabeled_ct", n_unlabeled_ct),
                        ("n_unlabeled_mr", n_unlabeled_mr)):
        if int(value) != value or value < 0:
            raise ConfigError(f"synthetic cohort: {name} must be a count >= 0, got {value!r}")
    if n_ct + n_mr + n_unlabeled_ct + n_unlabeled_mr == 0:
        raise ConfigError("synthetic cohort: nothing to write (all counts are 0)")
    for name, shape in (("ct_shape", ct_shape), ("mr_shape", mr_shape)):
        if len(shape) != 3 or min(shape) < 8:
            raise ConfigError(
                f"synthetic cohort: {name} must be three sides of at least 8 voxels, got {shape!r} "
                "(use size=16 or more)"
            )


def make_synthetic_cohort(
    out_dir: str | os.PathLike,
    *,
    n_ct: int = 24,
    n_mr: int = 8,
    n_unlabeled_ct: int = 8,
    n_unlabeled_mr: int = 4,
    seed: int = 0,
    size: int = 64,
    ct_shape: tuple[int, int, int] | None = None,
    mr_shape: tuple[int, int, int] | None = None,
    messy: bool = True,
    progress: bool = True,
    overwrite: bool = False,
) -> CohortInfo:
    """Write the synthetic hospital cohort to ``out_dir`` (see the module docstring for the layout).

    Args:
        out_dir: the cohort folder; it must not exist or be empty unless ``overwrite``.
        n_ct, n_mr: annotated CT and MR cases (a quarter of them second visits of earlier patients).
        n_unlabeled_ct, n_unlabeled_mr: extra patients with images and no mask or label.
        seed: everything derives from it; the same seed gives byte-identical files.
        size: grid size knob: CT ``size x size x 0.625 size``, MR ``0.75 size`` per side
            (64 -> 64x64x40 and 48^3; tests use 24-32). ``ct_shape``/``mr_shape`` override it.
        messy: add the clutter of a real export (see the module docstring).
        progress: show a progress bar (also off when ``MEDSSL_PROGRESS=0``).
        overwrite: replace an existing non-empty ``out_dir``.

    The cohort is assembled in a temporary folder beside ``out_dir`` and moved into place at the end,
    so an interrupted run never leaves a half cohort that looks complete.

    Raises:
        DataError: ``out_dir`` exists and is not empty (and ``overwrite`` is False).
        ConfigError: a count or shape that cannot be honoured.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    ct_shape = tuple(int(s) for s in (ct_shape or ct_grid_shape(size)))  # type: ignore[assignment]
    mr_shape = tuple(int(s) for s in (mr_shape or mr_grid_shape(size)))  # type: ignore[assignment]
    _check_request(n_ct, n_mr, n_unlabeled_ct, n_unlabeled_mr, ct_shape, mr_shape)  # type: ignore[arg-type]
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise DataError(
            f"{out_dir} already exists and is not empty; choose a new folder or pass overwrite=True "
            "(medssl synth: delete the folder first)"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        writer = _CohortWriter(staging, seed, ct_shape, mr_shape, messy)  # type: ignore[arg-type]
        ct_patients = _plan_patients(n_ct, n_unlabeled_ct, "CT", seed)
        mr_patients = _plan_patients(n_mr, n_unlabeled_mr, "MR", seed)
        total = sum(p.visits for p in ct_patients + mr_patients)
        with progress_bar(total=total, desc="synthetic cohort", unit="scan", enabled=progress) as bar:
            for patient in ct_patients:
                writer.write_ct_patient(patient)
                bar.update(patient.visits)
            for patient in mr_patients:
                writer.write_mr_patient(patient)
                bar.update(patient.visits)
        if messy:
            writer.write_clutter()
        labels = writer.label_table()
        labels.to_csv(staging / "labels.csv", index=False)  # inside the staging folder: atomic as a whole
        cohort = {
            "version": COHORT_VERSION,
            "seed": seed,
            "messy": messy,
            "ct_shape": list(ct_shape),
            "mr_shape": list(mr_shape),
            "counts": {"ct": n_ct, "mr": n_mr, "unlabeled_ct": n_unlabeled_ct, "unlabeled_mr": n_unlabeled_mr},
            "label_maps": {
                "CT": {str(k): v for k, v in CT_LABELS.items()},
                "MR": {str(k): v for k, v in MR_LABELS.items()},
            },
            "ct_hu_table": {k: {"plain": v[0], "venous": v[1], "sd": v[2]} for k, v in CT_HU_TABLE.items()},
            "mr_intensity_table": {k: dict(zip(MR_SEQUENCES, v)) for k, v in MR_INTENSITY_TABLE.items()},
            "layout": {"archive": "archive", "masks": "masks", "labels": "labels.csv"},
        }
        atomic_write_text(staging / "cohort.json", json.dumps(cohort, indent=2) + "\n")
        if out_dir.exists():
            if out_dir.is_dir():
                shutil.rmtree(out_dir)
            else:
                out_dir.unlink()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    def moved(path: Path) -> Path:
        return out_dir / path.relative_to(staging)

    info = CohortInfo(
        root=out_dir,
        archive_dir=out_dir / "archive",
        masks_dir=out_dir / "masks",
        labels_csv=out_dir / "labels.csv",
        seed=seed,
        n_ct=n_ct,
        n_mr=n_mr,
        n_unlabeled=len(writer.unlabeled_images),
        n_patients=len(ct_patients) + len(mr_patients),
        labels=labels,
        unlabeled_images=[moved(p) for p in writer.unlabeled_images],
        messy_files=[moved(p) for p in writer.messy_files],
        seconds=time.perf_counter() - started,
    )
    log.info("synthetic cohort written to %s in %.1f s: %d CT + %d MR annotated, %d unlabeled, %d messy files",
             out_dir, info.seconds, n_ct, n_mr, info.n_unlabeled, len(info.messy_files))
    return info


@dataclass
class _CTStudy:
    """A written CT study: where it is and what the clutter writer needs to add series to it."""

    patient: _Patient
    study_dir: Path
    uid_seed: str
    date: str
    accession: str
    hu: np.ndarray
    scan: ScanGeometry


def _render_until_lesion_visible(anatomy, render, redraw, want_lesion: bool, retry_rng):
    """``render(anatomy, rng)`` (rng None: the scan's own); when a lesion is wanted and the grid shows
    none (a coarse grid can miss a small one), redraw the lesions larger and render again."""
    result = render(anatomy, None)
    attempt = 0
    while want_lesion and not (result.labels == 4).any() and attempt < _LESION_RETRIES:
        attempt += 1
        rng = retry_rng(attempt)
        anatomy = redraw(anatomy, rng, size_factor=1.0 + 0.25 * attempt)
        result = render(anatomy, rng)
    if want_lesion and not (result.labels == 4).any():
        log.warning("no lesion voxel after %d redraws; the case is labelled 0", attempt)
    return anatomy, result


class _CohortWriter:
    """Writes patients into the staging folder and collects the label rows."""

    def __init__(self, root: Path, seed: int, ct_shape: tuple[int, int, int], mr_shape: tuple[int, int, int],
                 messy: bool) -> None:
        self.root = root
        self.seed = seed
        self.ct_shape = ct_shape
        self.mr_shape = mr_shape
        self.messy = messy
        self.rows: list[dict] = []
        self.unlabeled_images: list[Path] = []
        self.messy_files: list[Path] = []
        self.ct_studies: list[_CTStudy] = []
        self._ct_case = 0
        self._mr_case = 0

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _add_case(self, modality: str, patient: _Patient, visit: int, image: Path, labels: np.ndarray,
                  body_part: str, contrast: str, variant: str, scan: ScanGeometry) -> None:
        if modality == "CT":
            self._ct_case += 1
            case_id = f"ct_{self._ct_case:04d}"
        else:
            self._mr_case += 1
            case_id = f"mr_{self._mr_case:04d}"
        mask = self.root / "masks" / f"{case_id}_seg.nii.gz"
        write_label_nifti(labels, scan.affine, mask)
        lesion_voxels = int(np.count_nonzero(labels == 4))
        self.rows.append({
            "case_id": case_id,
            "patient_key": patient_pseudonym(self.seed, modality, patient.index),
            "visit": visit,
            "image": self._rel(image),
            "mask": self._rel(mask),
            "label": int(lesion_voxels > 0),
            "modality": modality,
            "body_part": body_part,
            "contrast": contrast,
            "geometry": variant,
            "orientation": scan.axcodes,
            "spacing_x": float(scan.spacing[0]),
            "spacing_y": float(scan.spacing[1]),
            "spacing_z": float(scan.spacing[2]),
            "lesion_voxels": lesion_voxels,
        })

    # CT -------------------------------------------------------------------------------------
    def write_ct_patient(self, patient: _Patient) -> None:
        seed, p = self.seed, patient.index
        anatomy = draw_torso_anatomy(make_rng(seed, "CT", p, "anatomy"), lesion=patient.lesion,
                                     grid_scale_mm=ct_nominal_spacing(self.ct_shape))
        named_folder = self.messy and not patient.labeled  # PACS default: FAMILY^GIVEN_ID
        folder_name = patient.identity.folder_name if named_folder else f"PAT{p + 1:04d}"
        patient_dir = self.root / "archive" / "CT" / folder_name
        date = None
        for visit in range(1, patient.visits + 1):
            scan_rng = make_rng(seed, "CT", p, "scan", visit)
            if visit > 1:
                anatomy = follow_up_anatomy(anatomy, make_rng(seed, "CT", p, "follow-up", visit))
            date = draw_study_date(scan_rng, after=date)
            accession = draw_accession(scan_rng)
            case_number = self._ct_case if patient.labeled else 1000 + p
            variant = CT_GEOMETRY_CYCLE[case_number % len(CT_GEOMETRY_CYCLE)]
            scan = draw_ct_geometry(scan_rng, self.ct_shape, variant)
            contrast = "venous" if scan_rng.uniform() < 0.65 else "plain"
            noise_hu = scan_rng.uniform(8.0, 20.0)
            anatomy, ct = _render_until_lesion_visible(
                anatomy,
                lambda a, rng: render_torso_ct(a, scan, rng or scan_rng, contrast=contrast, noise_hu=noise_hu),
                redraw_torso_lesions, patient.lesion,
                lambda attempt: make_rng(seed, "CT", p, "lesion-retry", visit, attempt),
            )
            if named_folder:
                study_dir = patient_dir / f"{date}_{accession}" / "DICOM"  # DICOMDIR-less extra level
            else:
                study_dir = patient_dir / f"ST{visit:02d}_CT_ABDOMEN"
            series_dir = study_dir / ("SE0002_PORTAL_VENOUS" if contrast == "venous" else "SE0002_NATIVE")
            order, names = "ascending", None
            if self.messy:
                order = {2: "shuffled", 4: "reversed"}.get(case_number % 5, "ascending")
                if named_folder or case_number % 6 == 3:
                    names = [f"{k + 1:08d}" for k in range(self.ct_shape[2])]  # no extension
            uid_seed = f"medssl-synthetic/{seed}/CT/{p}/{visit}"
            write_ct_series(
                ct.hu, scan, series_dir, patient.identity, uid_seed=uid_seed, study_date=date,
                accession=accession, contrast=contrast, instance_order=order, file_names=names,
                rescale_intercept=-1024.0 if case_number % 3 else -1000.0,
                rng=make_rng(seed, "CT", p, "order", visit),
            )
            self.ct_studies.append(_CTStudy(patient, study_dir, uid_seed, date, accession, ct.hu, scan))
            if patient.labeled:
                self._add_case("CT", patient, visit, series_dir, ct.labels, "ABDOMEN", contrast, variant, scan)
            else:
                self.unlabeled_images.append(series_dir)

    # MR -------------------------------------------------------------------------------------
    def write_mr_patient(self, patient: _Patient) -> None:
        seed, p = self.seed, patient.index
        anatomy = draw_brain_anatomy(make_rng(seed, "MR", p, "anatomy"), lesion=patient.lesion,
                                     grid_scale_mm=mr_nominal_spacing(self.mr_shape))
        subject = f"sub-{p + 1:04d}"
        for visit in range(1, patient.visits + 1):
            scan_rng = make_rng(seed, "MR", p, "scan", visit)
            if visit > 1:
                anatomy = follow_up_brain(anatomy, make_rng(seed, "MR", p, "follow-up", visit))
            case_number = self._mr_case if patient.labeled else 1000 + p
            variant = MR_GEOMETRY_CYCLE[case_number % len(MR_GEOMETRY_CYCLE)]
            sequence = MR_SEQUENCE_CYCLE[case_number % len(MR_SEQUENCE_CYCLE)]
            scan = draw_mr_geometry(scan_rng, self.mr_shape, variant)
            anatomy, mr = _render_until_lesion_visible(
                anatomy,
                lambda a, rng: render_brain_mr(a, scan, rng or scan_rng, sequence=sequence),
                redraw_brain_lesions, patient.lesion,
                lambda attempt: make_rng(seed, "MR", p, "lesion-retry", visit, attempt),
            )
            anat = self.root / "archive" / "MR" / subject / f"ses-{visit:02d}" / "anat"
            stem = f"{subject}_ses-{visit:02d}_{sequence}"
            uncompressed = self.messy and not patient.labeled
            image_path = anat / (stem + (".nii" if uncompressed else ".nii.gz"))
            slope = 0.5 if (self.messy and case_number % 4 == 1) else 1.0
            write_nifti(mr.intensity, scan.affine, image_path, slope=slope)
            if self.messy:  # BIDS sidecar: a non-image file beside every image
                sidecar = anat / f"{stem}.json"
                meta = {"Modality": "MR", "MagneticFieldStrength": 3, "Manufacturer": "MEDSSL-SYNTH",
                        "SeriesDescription": sequence}
                sidecar.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
                self.messy_files.append(sidecar)
            if patient.labeled:
                self._add_case("MR", patient, visit, image_path, mr.labels, "BRAIN", sequence, variant, scan)
            else:
                self.unlabeled_images.append(image_path)

    # clutter --------------------------------------------------------------------------------
    def write_clutter(self) -> None:
        """OS junk, a report (SR) in the first annotated study, a truncated file in an unlabeled one."""
        archive = self.root / "archive"
        self.messy_files += write_os_junk(archive, seed=f"{self.seed}/archive")
        if (archive / "CT").is_dir():
            ds_store = archive / "CT" / ".DS_Store"
            ds_store.write_bytes(b"\x00\x00\x00\x01Bud1" + hashlib.blake2b(b"ct", digest_size=64).digest())
            self.messy_files.append(ds_store)
        labeled = [study for study in self.ct_studies if study.patient.labeled]
        if labeled:
            study = labeled[0]
            identity = study.patient.identity
            report = write_text_report(
                study.study_dir / "SE0900_REPORT" / "SR000001.dcm", identity, study_uid=study_uid(study.uid_seed),
                study_date=study.date, accession_number=study.accession, uid_seed=f"{study.uid_seed}/report",
                text=f"CT abdomen of {identity.dicom_name}: see key images. "
                     f"Dictated by {identity.referring_physician}.",
            )
            self.messy_files.append(report)
        unlabeled = [study for study in self.ct_studies if not study.patient.labeled]
        if self.ct_studies:
            # a one-slice series of its own (own series UID, same study), cut short as an interrupted
            # transfer leaves it; never inside an annotated series
            study = (unlabeled or self.ct_studies)[0]
            folder = study.study_dir / "SE0003_INCOMPLETE"
            (complete,) = write_ct_series(
                study.hu[:, :, :1], study.scan, folder, study.patient.identity, uid_seed=f"{study.uid_seed}/incomplete",
                study_uid=study_uid(study.uid_seed), study_date=study.date, accession=study.accession,
                contrast="plain", series_number=3, file_names=["complete.tmp"],
            )
            self.messy_files.append(write_truncated_copy(complete, folder / "IM000001.dcm", fraction=0.6))
            complete.unlink()

    def label_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(LABEL_COLUMNS))
