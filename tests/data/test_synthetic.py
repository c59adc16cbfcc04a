"""The built-in synthetic cohort: determinism, tissue intensities, geometry, mask alignment, labels,
the messy parts of a real export, and the tiny helpers other tests use.

Alignment is checked against independent readers: SimpleITK (GDCM) for the DICOM series, nibabel for
the masks, and medssl.io.load_volume once it exists.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage

from medssl.synthetic.ct_torso import (
    TISSUE,
    draw_torso_anatomy,
    follow_up_anatomy,
    render_torso_ct,
)
from medssl.synthetic.fields import SmoothField, sample_on_grid
from medssl.synthetic.mr_brain import MR_TISSUE, draw_brain_anatomy, render_brain_mr
from medssl.synthetic.scan_geometry import CT_VARIANTS, ScanGeometry, axcode_directions, ct_directions
from medssl.synthetic import (
    LABEL_COLUMNS,
    make_ct_phantom,
    make_mr_phantom,
    make_synthetic_cohort,
    make_tiny_ct_series,
    make_tiny_mr_nifti,
)
from medssl.errors import ConfigError, DataError
from medssl.utils.seeding import make_rng

sitk = pytest.importorskip("SimpleITK")

SIZE = 24  # CT 24 x 24 x 15, MR 18^3


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "cohort"
    return make_synthetic_cohort(out, n_ct=8, n_mr=4, n_unlabeled_ct=2, n_unlabeled_mr=1, seed=3, size=SIZE,
                                 messy=True, progress=False)


# ---------------------------------------------------------------------------------------------
# independent readers


def read_series_with_sitk(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A DICOM series through SimpleITK/GDCM, returned as (array, affine) in the closest RAS+ order."""
    reader = sitk.ImageSeriesReader()
    names = [n for n in reader.GetGDCMSeriesFileNames(str(folder))]
    reader.SetFileNames(names)
    image = reader.Execute()
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)).astype(np.float32)  # (z,y,x) -> (x,y,z)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine_lps[:3, 3] = image.GetOrigin()
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    canonical = nib.as_closest_canonical(nib.Nifti1Image(array, affine_ras))
    return np.asarray(canonical.dataobj), canonical.affine


def read_nifti_canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(image.dataobj), image.affine


def assert_ct_labels_match_intensities(hu: np.ndarray, mask: np.ndarray) -> None:
    """A misaligned (shifted, flipped, permuted) mask puts organ labels on fat, air or bone."""
    liver = hu[mask == 1]
    assert liver.size > 20
    assert 30.0 < np.median(liver) < 150.0, np.median(liver)
    soft_tissue = (liver > -30.0) & (liver < 230.0)  # blur mixes in some fat at the edges of a coarse grid
    assert soft_tissue.mean() > 0.8, soft_tissue.mean()
    for label in (2, 3):  # kidneys, spleen: soft tissue or enhanced parenchyma, never fat or air
        values = hu[mask == label]
        if values.size:  # a spleen can vanish between the slices of a 24-voxel grid
            assert 0.0 < np.median(values) < 220.0
    corner_air = hu[:2, :2, :][mask[:2, :2, :] == 0]
    assert np.median(corner_air) < -900.0
    if (mask == 4).any():
        assert np.median(hu[mask == 4]) < np.median(liver)


# ---------------------------------------------------------------------------------------------
# the cohort on disk


def test_label_table_columns_counts_and_balance(cohort):
    labels = pd.read_csv(cohort.labels_csv)
    assert tuple(labels.columns) == LABEL_COLUMNS
    assert (labels["modality"] == "CT").sum() == 8 and (labels["modality"] == "MR").sum() == 4
    pd.testing.assert_frame_equal(labels, cohort.labels.reset_index(drop=True), check_dtype=False)
    assert labels["case_id"].is_unique
    assert (labels["label"] == (labels["lesion_voxels"] > 0).astype(int)).all()
    for modality, group in labels.groupby("modality"):
        assert abs(int(group["label"].sum()) - len(group) / 2) <= 1, (modality, group["label"].tolist())
    # follow-up visits: some patients have two annotated studies, sharing their pseudonym
    visits = labels.groupby("patient_key")["visit"].apply(sorted)
    assert any(v == [1, 2] for v in visits)
    assert cohort.n_patients == labels["patient_key"].nunique() + 3  # + unlabeled patients
    for column in ("image", "mask"):
        assert all((cohort.root / p).exists() for p in labels[column])


def test_label_table_holds_no_identifiers(cohort):
    labels_text = cohort.labels_csv.read_text(encoding="utf-8").upper()
    planted = set()
    for series in cohort.archive_dir.rglob("*"):
        if series.is_file() and series.parent.name.startswith("SE0002"):
            ds = pydicom.dcmread(series, stop_before_pixels=True)
            family, given = str(ds.PatientName).split("^")
            planted |= {family, given, ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber}
            assert ds.InstitutionName and ds.ReferringPhysicianName  # something for de-identification
    assert len(planted) > 10
    for value in planted:
        assert value.upper() not in labels_text, value


def test_ct_series_are_int16_with_rescale_and_anisotropic(cohort):
    labels = cohort.labels[cohort.labels["modality"] == "CT"]
    for _, row in labels.iterrows():
        files = sorted(p for p in (cohort.root / row["image"]).iterdir())
        ds = pydicom.dcmread(files[0])
        assert ds.Modality == "CT" and ds.BitsAllocated == 16 and ds.PixelRepresentation == 1
        assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) in (-1024.0, -1000.0)
        assert ds.pixel_array.dtype == np.int16
        assert row["spacing_z"] > 1.1 * row["spacing_x"]
        assert row["spacing_x"] == pytest.approx(float(ds.PixelSpacing[1]), abs=1e-3)


def test_ct_masks_align_with_series_read_by_simpleitk(cohort):
    """Every storage variant (standard, reversed, mirrored, feet-first, oblique) must align."""
    labels = cohort.labels[cohort.labels["modality"] == "CT"]
    assert {"standard", "oblique", "reversed", "flipped_lr"} <= set(labels["geometry"])
    present = []
    for _, row in labels.iterrows():
        hu, affine = read_series_with_sitk(cohort.root / row["image"])
        mask, mask_affine = read_nifti_canonical(cohort.root / row["mask"])
        assert hu.shape == mask.shape, row["case_id"]
        np.testing.assert_allclose(affine, mask_affine, atol=1e-3, err_msg=row["case_id"])
        assert_ct_labels_match_intensities(hu, mask)
        present.append({1, 2, 3} <= set(np.unique(mask).tolist()))
    assert np.mean(present) >= 0.7


def test_oblique_and_flipped_geometry_is_in_the_headers(cohort):
    labels = cohort.labels[cohort.labels["modality"] == "CT"].set_index("geometry")
    first = lambda variant: pydicom.dcmread(  # noqa: E731
        sorted((cohort.root / labels.loc[[variant]].iloc[0]["image"]).iterdir())[0], stop_before_pixels=True
    )
    oblique = np.array(first("oblique").ImageOrientationPatient, float)
    normal = np.cross(oblique[:3], oblique[3:])
    tilt = np.degrees(np.arccos(abs(normal[2])))
    assert 5.0 < tilt < 25.0
    flipped = np.array(first("flipped_lr").ImageOrientationPatient, float)
    np.testing.assert_allclose(flipped[:3], [-1, 0, 0], atol=1e-6)
    assert labels.loc[["reversed"]].iloc[0]["orientation"][2] == "I"


def test_mr_masks_align_and_tissue_contrast_follows_the_sequence(cohort):
    labels = cohort.labels[cohort.labels["modality"] == "MR"]
    assert labels["orientation"].nunique() >= 3
    for _, row in labels.iterrows():
        image, affine = read_nifti_canonical(cohort.root / row["image"])
        scaled = np.asarray(nib.as_closest_canonical(nib.load(str(cohort.root / row["image"]))).get_fdata())
        mask, mask_affine = read_nifti_canonical(cohort.root / row["mask"])
        assert image.shape == mask.shape
        np.testing.assert_allclose(affine, mask_affine, atol=1e-5)
        csf, grey, white = (np.median(scaled[mask == k]) for k in (1, 2, 3))
        if row["contrast"] == "T1w":
            assert white > grey > csf
        elif row["contrast"] == "T2w":
            assert csf > grey > white
        else:  # FLAIR: CSF dark, grey above white
            assert grey > white > csf


def test_messy_export_files_are_present_and_not_listed(cohort):
    archive = cohort.archive_dir
    listed = set(cohort.labels["image"]) | set(cohort.labels["mask"])
    messy = {p.relative_to(cohort.root).as_posix() for p in cohort.messy_files}
    assert not messy & listed
    assert all(p.exists() for p in cohort.messy_files)
    assert (archive / "README.txt").exists() and (archive / ".DS_Store").exists()
    reports = [p for p in cohort.messy_files if p.name.startswith("SR")]
    assert len(reports) == 1
    report = pydicom.dcmread(reports[0])
    assert report.Modality == "SR" and "PixelData" not in report
    truncated = [p for p in cohort.messy_files if p.parent.name == "SE0003_INCOMPLETE"]
    assert len(truncated) == 1
    header = pydicom.dcmread(truncated[0], stop_before_pixels=True)  # the header survived
    with pytest.raises(Exception):
        pydicom.dcmread(truncated[0]).pixel_array  # the pixels did not
    series_uids = {
        pydicom.dcmread(next(p for p in (cohort.root / img).iterdir()), stop_before_pixels=True).SeriesInstanceUID
        for img in cohort.labels.loc[cohort.labels["modality"] == "CT", "image"]
    }
    assert header.SeriesInstanceUID not in series_uids  # it cannot corrupt an annotated series
    # files without extension, patient-named folders with an extra level, shuffled instance numbers
    no_extension = [p for p in archive.rglob("*") if p.is_file() and p.suffix == "" and p.name.isdigit()]
    assert no_extension
    named = [p for p in (archive / "CT").iterdir() if "^" in p.name]
    assert named and all(any(q.name == "DICOM" for q in p.rglob("*")) for p in named)
    shuffled = 0
    for image in cohort.labels.loc[cohort.labels["modality"] == "CT", "image"]:
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in (cohort.root / image).iterdir()]
        headers.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        numbers = [int(d.InstanceNumber) for d in headers]
        shuffled += numbers not in (sorted(numbers), sorted(numbers, reverse=True))
    assert shuffled >= 1


def test_unlabeled_volumes_exist_without_masks(cohort):
    assert cohort.n_unlabeled == 3 and len(cohort.unlabeled_images) == 3
    listed = set(cohort.labels["image"])
    for image in cohort.unlabeled_images:
        assert image.exists()
        assert image.relative_to(cohort.root).as_posix() not in listed
    assert len(list(cohort.masks_dir.iterdir())) == len(cohort.labels)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_files_and_clean_mode_has_no_clutter(tmp_path):
    kwargs = dict(n_ct=3, n_mr=2, n_unlabeled_ct=1, n_unlabeled_mr=0, size=16, messy=False, progress=False)
    first = make_synthetic_cohort(tmp_path / "a", seed=5, **kwargs)
    second = make_synthetic_cohort(tmp_path / "b", seed=5, **kwargs)
    other = make_synthetic_cohort(tmp_path / "c", seed=6, **kwargs)
    digest_a, digest_b = _tree_digest(first.root), _tree_digest(second.root)
    assert digest_a == digest_b
    pd.testing.assert_frame_equal(first.labels, second.labels)
    digest_c = _tree_digest(other.root)
    changed = [name for name in digest_a if name in digest_c and digest_a[name] != digest_c[name]]
    assert any(name.startswith("masks/") for name in changed)
    # clean mode: only .dcm slices, NIfTI images and masks, and the two tables
    names = list(digest_a)
    assert not first.messy_files
    assert all(n.endswith((".dcm", ".nii.gz")) or n in ("labels.csv", "cohort.json") for n in names), names
    assert not any(Path(n).name.startswith(".") for n in names)


def test_bad_requests_raise_clear_errors(tmp_path, cohort):
    with pytest.raises(DataError, match="not empty"):
        make_synthetic_cohort(cohort.root, n_ct=1, n_mr=0, n_unlabeled_ct=0, n_unlabeled_mr=0, size=16)
    with pytest.raises(ConfigError, match="n_ct"):
        make_synthetic_cohort(tmp_path / "x", n_ct=-1)
    with pytest.raises(ConfigError, match="at least 8"):
        make_synthetic_cohort(tmp_path / "y", size=4)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".*partial*"))


def test_overwrite_replaces_an_existing_cohort(tmp_path):
    target = tmp_path / "cohort"
    target.mkdir()
    (target / "old.txt").write_text("stale")
    info = make_synthetic_cohort(target, n_ct=1, n_mr=1, n_unlabeled_ct=0, n_unlabeled_mr=0, size=16,
                                 progress=False, overwrite=True)
    assert not (target / "old.txt").exists() and info.labels_csv.exists()
    assert "medssl manifest" in info.summary()


# ---------------------------------------------------------------------------------------------
# the phantoms in memory


@pytest.mark.parametrize("contrast", ["plain", "venous"])
def test_ct_hounsfield_units_per_tissue(contrast):
    rng = make_rng(0, "hu", contrast)
    anatomy = draw_torso_anatomy(rng, lesion=True, grid_scale_mm=12.0)
    geometry = ScanGeometry((32, 32, 20), (12.0, 12.0, 18.0), ct_directions("standard"))
    ct = render_torso_ct(anatomy, geometry, rng, contrast=contrast, noise_hu=10.0)
    assert ct.hu.dtype == np.float32 and np.array_equal(ct.hu, np.round(ct.hu))
    expected = {  # (low, high) for the median HU of a tissue's voxels
        "air": (-1024, -950),
        "lung": (-930, -750),
        "fat_subcutaneous": (-150, -50),
        "fat_visceral": (-150, -40),
        "muscle": (20, 80),
        "liver": (40, 80) if contrast == "plain" else (85, 135),
        "spleen": (30, 70) if contrast == "plain" else (90, 145),
        "kidney_cortex": (15, 50) if contrast == "plain" else (130, 210),
    }
    interior_checked = set()
    for name, (low, high) in expected.items():
        assert low <= ct.tissue_hu[name] <= high, (name, ct.tissue_hu[name])  # the scan's tissue mean
        region = ct.tissues == TISSUE[name]
        assert region.sum() > 5, name
        interior = ndimage.binary_erosion(region)  # away from partial-volume edges
        if interior.sum() >= 5:
            assert low - 15 <= np.median(ct.hu[interior]) <= high + 15, (name, np.median(ct.hu[interior]))
            interior_checked.add(name)
    assert {"air", "lung", "liver", "fat_visceral"} <= interior_checked
    bone = ct.hu[ct.tissues == TISSUE["bone_cortical"]]
    assert np.percentile(bone, 90) > 600  # cortical shell, partial-volumed at this grid
    assert np.median(ct.hu[ct.tissues == TISSUE["lesion"]]) < np.median(ct.hu[ct.tissues == TISSUE["liver"]]) - 5
    # texture and noise: air far from the body has the requested noise level
    air = ct.hu[:3, :3, :][ct.tissues[:3, :3, :] == TISSUE["air"]]
    assert 5.0 < np.std(air[air > -1024]) < 20.0


def test_liver_and_spleen_overlap_in_intensity_across_scans():
    liver, spleen = [], []
    for i in range(12):
        rng = make_rng(1, "overlap", i)
        geometry = ScanGeometry((16, 16, 10), (24.0, 24.0, 36.0), ct_directions("standard"))
        ct = render_torso_ct(draw_torso_anatomy(rng, lesion=False, grid_scale_mm=24.0), geometry, rng,
                             contrast="venous", noise_hu=10.0)
        liver.append(ct.tissue_hu["liver"])
        spleen.append(ct.tissue_hu["spleen"])
    assert max(liver) > min(spleen) and max(spleen) > min(liver)  # no threshold separates them


def test_anatomy_varies_between_patients_and_persists_at_follow_up():
    geometry = ScanGeometry((24, 24, 16), (16.0, 16.0, 24.0), ct_directions("standard"))
    liver_sizes, centroids = [], []
    for i in range(6):
        rng = make_rng(2, "vary", i)
        ct = render_torso_ct(draw_torso_anatomy(rng, lesion=False, grid_scale_mm=16.0), geometry, rng)
        liver = np.argwhere(ct.labels == 1)
        liver_sizes.append(len(liver))
        centroids.append(liver.mean(axis=0))
    assert np.std(liver_sizes) / np.mean(liver_sizes) > 0.1
    assert np.ptp(np.array(centroids), axis=0).max() > 1.0  # voxels
    rng = make_rng(2, "follow")
    baseline = draw_torso_anatomy(rng, lesion=True, grid_scale_mm=16.0)
    later = follow_up_anatomy(baseline, rng)
    assert len(later.lesions) == len(baseline.lesions) and later.liver_right is baseline.liver_right
    assert len(later.deformations) == len(baseline.deformations) + 1


@pytest.mark.parametrize("variant, axcodes", [("standard", "LPS"), ("reversed", "LPI"), ("flipped_lr", "RPS"),
                                              ("feet_first", "RPI")])
def test_ct_storage_variants(variant, axcodes):
    geometry = ScanGeometry((8, 8, 4), (5.0, 5.0, 10.0), ct_directions(variant), np.array([3.0, -2.0, 7.0]))
    assert geometry.axcodes == axcodes
    centre = geometry.affine @ np.array([3.5, 3.5, 1.5, 1.0])
    np.testing.assert_allclose(centre[:3], [3.0, -2.0, 7.0])
    assert set(CT_VARIANTS) >= {variant, "oblique"}


def test_oblique_variant_is_a_rotation_and_world_fields_do_not_depend_on_the_grid():
    directions = ct_directions("oblique", np.random.default_rng(0))
    np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-12)
    assert abs(directions[2, 2]) < np.cos(np.deg2rad(7.0))
    field = SmoothField(np.random.default_rng(0), node_spacing_mm=60.0, half_extent_mm=200.0)
    ras = ScanGeometry((20, 20, 10), (6.0, 6.0, 12.0), axcode_directions("RAS"))
    lpi = ScanGeometry((20, 20, 10), (6.0, 6.0, 12.0), axcode_directions("LPI"))
    # the same world points stored in the opposite order get the same values, reversed
    exact = field(ras.world_points())
    np.testing.assert_allclose(field(lpi.world_points()), exact[::-1, ::-1, ::-1], atol=1e-5)
    error = sample_on_grid(field, lpi.affine, lpi.shape) - exact[::-1, ::-1, ::-1]
    assert np.sqrt(np.mean(error**2)) < 0.06 * np.std(exact) and np.max(np.abs(error)) < 0.3 * np.std(exact)
    np.testing.assert_allclose(sample_on_grid(field, lpi.affine, lpi.shape, max_step_fraction=0.0),
                               exact[::-1, ::-1, ::-1], atol=1e-5)


def test_mr_bias_field_and_rician_noise():
    rng = make_rng(4, "mr")
    anatomy = draw_brain_anatomy(rng, lesion=False, grid_scale_mm=10.0)
    geometry = ScanGeometry((24, 24, 24), (10.0, 10.0, 10.0), axcode_directions("RAS"))
    flat = render_brain_mr(anatomy, geometry, make_rng(4, "a"), sequence="T1w", bias_strength=0.0, noise_fraction=0.0)
    biased = render_brain_mr(anatomy, geometry, make_rng(4, "a"), sequence="T1w", bias_strength=0.3,
                             noise_fraction=0.0)
    noisy = render_brain_mr(anatomy, geometry, make_rng(4, "a"), sequence="T1w", bias_strength=0.0,
                            noise_fraction=0.04)
    deep_white = (flat.tissues == MR_TISSUE["white_matter"])
    core = deep_white & np.roll(deep_white, 1, 0) & np.roll(deep_white, -1, 0) & np.roll(deep_white, 1, 1) \
        & np.roll(deep_white, -1, 1) & np.roll(deep_white, 1, 2) & np.roll(deep_white, -1, 2)
    assert core.sum() > 10
    spread = lambda image: np.std(image[core]) / np.mean(image[core])  # noqa: E731
    assert spread(flat.intensity) < 0.01
    assert spread(biased.intensity) > 3 * spread(flat.intensity) + 0.02
    far_air = ndimage.binary_erosion(flat.tissues == MR_TISSUE["air"], iterations=2)  # no blurred signal
    air = noisy.intensity[far_air]
    assert (noisy.intensity >= 0).all()
    sigma = 0.04 * flat.tissue_intensity["white_matter"]
    # magnitude of complex Gaussian noise on zero signal is Rayleigh: mean sigma * sqrt(pi / 2)
    assert np.mean(air) == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.1)
    assert (flat.labels == 4).sum() == 0 and {1, 2, 3} <= set(np.unique(flat.labels))


# ---------------------------------------------------------------------------------------------
# helpers for other tests


def test_tiny_ct_series_and_its_mask(tmp_path):
    folder = make_tiny_ct_series(tmp_path / "series", seed=2, mask_path=tmp_path / "mask.nii.gz", geometry="oblique")
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 16
    hu, affine = read_series_with_sitk(folder)
    mask, mask_affine = read_nifti_canonical(tmp_path / "mask.nii.gz")
    assert hu.shape == mask.shape == (24, 24, 16)
    np.testing.assert_allclose(affine, mask_affine, atol=1e-3)
    assert_ct_labels_match_intensities(hu, mask)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert ds.PatientName and ds.PatientID.isdigit()
    again = make_tiny_ct_series(tmp_path / "again", seed=2, geometry="oblique")
    assert [p.read_bytes() for p in files] == [p.read_bytes() for p in sorted(again.glob("*.dcm"))]


def test_tiny_mr_nifti_orientation_and_mask(tmp_path):
    path = make_tiny_mr_nifti(tmp_path / "t2.nii.gz", seed=1, axcodes="PIR", sequence="T2w",
                              mask_path=tmp_path / "seg.nii.gz")
    image = nib.load(str(path))
    assert "".join(nib.aff2axcodes(image.affine)) == "PIR" and image.shape == (24, 24, 24)
    mask = nib.load(str(tmp_path / "seg.nii.gz"))
    assert mask.get_data_dtype() == np.uint8 and np.allclose(mask.affine, image.affine)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3, 4}


def test_in_memory_phantoms_are_ras_volumes():
    volume, mask = make_ct_phantom(0, geometry="feet_first")
    assert volume.orientation == "RAS" and volume.modality == "CT"
    assert volume.array.shape == mask.shape == (1, 24, 24, 16)
    assert_ct_labels_match_intensities(volume.array[0], mask[0])
    mr, mr_mask = make_mr_phantom(0, axcodes="LIA", sequence="FLAIR")
    assert mr.orientation == "RAS" and mr.array.shape == mr_mask.shape
    assert make_ct_phantom(0)[0].array.tobytes() == make_ct_phantom(0)[0].array.tobytes()


def test_load_volume_aligns_images_and_masks(cohort):
    """Image and mask loaded by medssl.io.load_volume are voxel-aligned."""
    from medssl.io import load_volume

    for _, row in cohort.labels.iterrows():
        image = load_volume(cohort.root / row["image"])
        mask = load_volume(cohort.root / row["mask"])
        assert image.spatial_shape == mask.spatial_shape, row["case_id"]
        np.testing.assert_allclose(image.affine, mask.affine, atol=1e-3, err_msg=row["case_id"])
        if row["modality"] == "CT":
            assert image.modality == "CT"
            assert_ct_labels_match_intensities(image.array[0], np.round(mask.array[0]).astype(np.uint8))
