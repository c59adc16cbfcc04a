"""DICOM series assembly: files -> series -> volumes -> :class:`~medssl.io.Volume`.

A folder (searched recursively), a list of files or one file becomes one volume:

1. every file's header is read (:func:`medssl.io.dicom_header.read_header`); non-DICOM files are
   ignored, non-image objects (SR, RTSTRUCT, presentation states) set aside;
2. image files are grouped by SeriesInstanceUID (through its salted pseudonym, so the manifest groups
   the same way without ever holding the UID); several series need ``series_uid=`` or raise an error
   listing them;
3. :func:`plan_series` turns a series into volume plans: single-frame files with positions form one
   stack sorted along the slice normal (:func:`medssl.io.dicom_geometry.assemble_stack`); a
   multi-frame file (enhanced CT/MR, RT dose) stacks its frames the same way; images without
   positions (CR, DX, US, SC) are 2D volumes with ``Z == 1``;
4. :func:`read_plan` decodes the pixels (:mod:`medssl.io.dicom_pixels`), fills the native
   ``(C, column, row, slice)`` grid, converts LPS to RAS and reorients to the closest RAS+
   (:mod:`medssl.io.orientation`), the same rule as NIfTI.

The manifest uses steps 1-3 only (headers, no pixels), so its shapes and spacings are those a load
gives.

Example:
    >>> import numpy as np, tempfile
    >>> from medssl.io.dicom_write import write_dicom_series
    >>> from medssl.io.volume import Volume
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_dicom_series(Volume(np.zeros((1, 8, 8, 5), np.float32), np.diag([0.7, 0.7, 2.5, 1]), "CT"), folder)
    >>> volume = load_dicom(folder, salt="demo")
    >>> volume.spatial_shape, volume.spacing, volume.orientation
    ((8, 8, 5), (0.7, 0.7, 2.5), 'RAS')
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np

from medssl.errors import NotAnImageError, VolumeReadError
from medssl.io.dicom_geometry import StackGeometry, assemble_stack, single_plane
from medssl.io.dicom_header import DicomHeader, NotDicomError, read_header
from medssl.io.dicom_mosaic import split_mosaic
from medssl.io.dicom_pixels import decode_frames, read_dataset
from medssl.io.dicom_raw import EmptyFileError
from medssl.io.limits import ReadLimits, as_limits
from medssl.io.orientation import LPS_TO_RAS, reorient_to_ras
from medssl.io.volume import Volume

logger = logging.getLogger(__name__)

OnUneven = Literal["error", "resample"]


@dataclass
class VolumePlan:
    """How to build one volume: its files, which (file, frame) fills each plane, and its geometry.

    ``planes[j] == (file index, frame index)`` is input plane ``j`` of ``stack`` (whose ``order`` and
    ``resample`` refer to these ``j``). ``echo`` is ``(EchoNumbers, EchoTime)`` for one echo of a
    multi-echo series (:func:`split_echoes`), else ``None``.
    """

    @property
    def echo_label(self) -> str | None:
        """``"echo 2 (TE 20 ms)"`` for one echo of a multi-echo series."""
        if self.echo is None:
            return None
        number, time = self.echo
        parts = [f"echo {number}" if number is not None else "echo"]
        if time is not None:
            parts.append(f"(TE {time:g} ms)")
        return " ".join(parts)

    headers: list[DicomHeader]
    planes: list[tuple[int, int]]
    stack: StackGeometry
    name: str
    echo: tuple[int | None, float | None] | None = None

    @property
    def modality(self) -> str:
        return self.headers[0].modality

    @property
    def channels(self) -> int:
        first = self.headers[0]
        return 3 if first.photometric == "PALETTE COLOR" else first.samples_per_pixel

    @property
    def affine_ras(self) -> np.ndarray:
        return LPS_TO_RAS @ self.stack.affine_lps


def series_name(headers: Sequence[DicomHeader]) -> str:
    """How messages name a series: number, description, file count and folder; never a UID."""
    first = headers[0]
    if len(headers) > 1:
        common = os.path.commonpath([h.path for h in headers])
        folder = common if os.path.isdir(common) else os.path.dirname(common)
    else:
        folder = os.path.dirname(first.path)
    label = f"series {first.series_number}" if first.series_number is not None else "series"
    if first.series_description:
        label += f" '{first.series_description}'"
    return f"{label} ({len(headers)} file{'s' if len(headers) != 1 else ''} in {folder or '.'})"


def list_files(folder: str | os.PathLike) -> list[str]:
    """Every regular file under ``folder`` (recursively), sorted, hidden folders included."""
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        found.extend(os.path.join(directory, name) for name in sorted(files))
    return found


def group_by_series(headers: Iterable[DicomHeader]) -> dict[str, list[DicomHeader]]:
    """Image and error headers by series key (files without a series UID are their own series)."""
    groups: dict[str, list[DicomHeader]] = defaultdict(list)
    for header in headers:
        if header.status == "non-image":
            continue
        key = header.series_key or header.instance_key or f"file:{header.path}"
        groups[key].append(header)
    return dict(groups)


def check_limits(plan: VolumePlan, limits: ReadLimits | None = None) -> VolumePlan:
    """Refuse a plan whose headers promise more than the size guard allows (:mod:`medssl.io.limits`):
    the volume's voxels, and the pixel bytes its files hold once decoded. Nothing is read."""
    columns, rows, slices = plan.stack.shape
    channels = plan.channels
    voxels = channels * columns * rows * slices
    stored = sum(h.rows * h.columns * h.n_frames * h.samples_per_pixel * max(1, h.bits_allocated // 8) for h in plan.headers)
    shape = (channels, columns, rows, slices) if channels > 1 else (columns, rows, slices)
    problem = as_limits(limits).problem(voxels=voxels, stored_bytes=stored, shape=shape)
    if problem:
        raise VolumeReadError(plan.name, f"the headers promise {problem}", hint="check the files; raise the limit if the volume is real")
    return plan


def plan_file(header: DicomHeader, *, on_uneven: OnUneven = "error", limits: ReadLimits | None = None) -> VolumePlan:
    """The volume of one file: a 2D image, a positioned multi-frame stack or unpositioned frames."""
    name = header.path
    if header.positioned:
        stack = assemble_stack(header.frames, name=name, on_uneven=on_uneven, slice_spacing=header.slice_spacing)
    else:
        stack = single_plane(
            header.frames[0],
            slice_spacing=header.slice_spacing,
            patient_orientation=header.patient_orientation,
            n_slices=header.n_frames,
            name=name,
        )
    return check_limits(VolumePlan([header], [(0, f) for f in range(header.n_frames)], stack, name), limits)


def plan_series(
    headers: Sequence[DicomHeader], *, on_uneven: OnUneven = "error", limits: ReadLimits | None = None
) -> list[VolumePlan]:
    """Volume plans of one series' image headers (see the module docstring, step 3).

    Raises:
        VolumeReadError: the series cannot form its volume(s) (mixed sizes, duplicate positions,
            gaps or uneven spacing with ``on_uneven="error"``); the message names the series.
    """
    images = sorted((h for h in headers if h.is_image), key=lambda h: h.path)
    if not images:
        raise VolumeReadError(series_name(headers), "no readable image files")
    stackable = all(h.n_frames == 1 and h.positioned for h in images)
    if stackable:
        name = series_name(images)
        try:
            stack = assemble_stack(
                [h.frames[0] for h in images], name=name, on_uneven=on_uneven, slice_spacing=images[0].slice_spacing
            )
        except VolumeReadError:
            echoes = split_echoes(images, on_uneven=on_uneven, limits=limits)
            if echoes is None:
                raise
            return echoes
        first = images[0]
        for header in images[1:]:
            if (header.samples_per_pixel, header.photometric) != (first.samples_per_pixel, first.photometric):
                raise VolumeReadError(name, "files differ in samples per pixel or photometric interpretation")
        return [check_limits(VolumePlan(list(images), [(i, 0) for i in range(len(images))], stack, name), limits)]
    return [plan_file(h, on_uneven=on_uneven, limits=limits) for h in images]


def _echo_key(header: DicomHeader) -> tuple[int | None, float | None]:
    return header.echo_number, (round(header.echo_time, 4) if header.echo_time is not None else None)


def split_echoes(
    images: Sequence[DicomHeader], *, on_uneven: OnUneven = "error", limits: ReadLimits | None = None
) -> list[VolumePlan] | None:
    """One plan per echo of a multi-echo series (several images at each position that differ in
    EchoNumbers or EchoTime), or ``None`` when the images do not split that way (one echo only, or
    an echo that does not stack on its own: the caller's error then stands).

    Echoes are ordered by echo number, then echo time; each stacks and is checked like a series.
    """
    groups: dict[tuple[int | None, float | None], list[DicomHeader]] = defaultdict(list)
    for header in images:
        groups[_echo_key(header)].append(header)
    if len(groups) < 2:
        return None
    plans = []
    for key in sorted(groups, key=lambda k: (k[0] is None, k[0] or 0, k[1] is None, k[1] or 0.0)):
        members = groups[key]
        name = f"{series_name(members)} echo {key[0] if key[0] is not None else key[1]}"
        try:
            stack = assemble_stack([h.frames[0] for h in members], name=name, on_uneven=on_uneven, slice_spacing=members[0].slice_spacing)
        except VolumeReadError:
            return None
        plans.append(check_limits(VolumePlan(list(members), [(i, 0) for i in range(len(members))], stack, name, echo=key), limits))
    shapes = {plan.stack.shape for plan in plans}
    logger.debug("a series splits into %d echoes (%d grid%s)", len(plans), len(shapes), "s" if len(shapes) > 1 else "")
    return plans


def _plane(frames: np.ndarray, frame: int) -> np.ndarray:
    """One decoded frame ``(R, C, S)`` as native ``(S, column, row)``."""
    return np.transpose(frames[frame], (2, 1, 0))


def read_plan(plan: VolumePlan, *, reorient: bool = True) -> Volume:
    """Decode the pixels of a plan into a :class:`Volume` (RAS+ unless ``reorient=False``)."""
    stack = plan.stack
    columns, rows, n_slices = stack.shape
    channels = plan.channels
    output = np.empty((channels, columns, rows, n_slices), dtype=np.float32)
    by_file: dict[int, list[int]] = defaultdict(list)
    for j, (file_index, _) in enumerate(plan.planes):
        by_file[file_index].append(j)

    def decoded(file_index: int) -> np.ndarray:
        header = plan.headers[file_index]
        try:
            frames = decode_frames(read_dataset(header.path), header.path, frame_rescale=header.frame_rescale)
        except (VolumeReadError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # pydicom converts elements lazily: a damaged one raises here
            cause = " ".join(str(exc).split())
            raise VolumeReadError(header.path, f"the file cannot be read ({type(exc).__name__}{': ' + cause if cause else ''})") from exc
        if header.mosaic is not None:
            count, tile_rows, tile_columns = header.mosaic
            side = int(np.ceil(np.sqrt(count)))
            if frames.shape[0] != 1 or frames.shape[1] < side * tile_rows or frames.shape[2] < side * tile_columns:
                raise VolumeReadError(header.path, f"decoded mosaic has shape {frames.shape[1:3]}, too small for its {count} slices")
            frames = split_mosaic(frames, header.mosaic)
        if frames.shape[1:] != (header.rows, header.columns, channels):
            raise VolumeReadError(header.path, f"decoded pixels have shape {frames.shape[1:]}, expected ({header.rows}, {header.columns}, {channels})")
        return frames

    if stack.resample is None:
        slice_of_plane = {plane: k for k, plane in enumerate(stack.order)}
        for file_index, plane_indices in by_file.items():
            frames = decoded(file_index)
            for j in plane_indices:
                if j in slice_of_plane:
                    output[..., slice_of_plane[j]] = _plane(frames, plan.planes[j][1])
    else:
        sources = np.empty((len(plan.planes), channels, columns, rows), dtype=np.float32)
        for file_index, plane_indices in by_file.items():
            frames = decoded(file_index)
            for j in plane_indices:
                sources[j] = _plane(frames, plan.planes[j][1])
        for k, (lo, hi, weight) in enumerate(stack.resample):
            output[..., k] = (1.0 - weight) * sources[lo] + weight * sources[hi]

    affine = LPS_TO_RAS @ stack.affine_lps
    if reorient:
        output, affine = reorient_to_ras(output, affine)
    first = plan.headers[0]
    meta = dict(next((h.meta for h in plan.headers if h.meta is not None), None) or {})
    meta.update(
        source_format="dicom",
        patient_key=first.patient_key,
        study_key=first.study_key,
        series_key=first.series_key,
        n_files=len(plan.headers),
        transfer_syntax=first.transfer_syntax,
        sop_class=first.sop_class_name,
    )
    if len(plan.headers) == 1 and first.n_frames == 1 and first.instance_key:
        meta["instance_key"] = first.instance_key
    meta.update(stack.notes)
    meta["spacing_known"] = not stack.notes.get("pixel_spacing_assumed", False)
    echoes = {_echo_key(h) for h in plan.headers}
    if len(echoes) == 1 and echoes != {(None, None)}:  # every file of one echo (a whole series, or one echo of it)
        number, time = echoes.pop()
        if number is not None:
            meta["echo_number"] = number
        if time is not None:
            meta["EchoTime"] = time
    if first.mosaic is not None:
        meta["mosaic_images"] = first.mosaic[0]
    issue = next((h.spacing_issue for h in plan.headers if h.spacing_issue), None)
    if issue:
        meta["spacing_issue"] = issue
    return Volume(output, affine, first.modality, meta)


def _read_headers(paths: Sequence[str], salt: str | bytes | None, *, quiet: bool) -> list[DicomHeader]:
    headers = []
    seen: set[str] = set()  # acquisition fields are decoded once per series
    for path in paths:
        try:
            headers.append(read_header(path, salt, known_series=seen))
            if headers[-1].series_key:
                seen.add(headers[-1].series_key)
        except EmptyFileError as exc:
            if not quiet:
                raise VolumeReadError(path, exc.reason, hint=exc.hint) from exc
            logger.debug("ignoring an empty file")
        except NotDicomError as exc:
            if not quiet:
                raise VolumeReadError(path, "not a DICOM or NIfTI file", hint=exc.reason) from exc
            logger.debug("ignoring a file that is not DICOM: %s", exc.reason)
        except VolumeReadError as exc:
            raise VolumeReadError(
                exc.path, exc.reason, hint="remove or repair this file, or pass the list of the series' other files"
            ) from exc
    return headers


def load_dicom(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    series_uid: str | None = None,
    *,
    on_uneven: OnUneven = "error",
    reorient: bool = True,
    salt: str | bytes | None = None,
    limits: ReadLimits | None = None,
) -> Volume:
    """Load a DICOM file, a folder holding DICOM series (recursively) or a list of one series' files.

    Args:
        source: a file, a folder, or a list of files.
        series_uid: the SeriesInstanceUID to load when the folder or list holds several series.
        on_uneven: ``"error"`` (default) or ``"resample"`` for series with missing slices or uneven
            spacing.
        reorient: ``False`` keeps the native DICOM grid (column, row, slice) in RAS world coordinates.
        salt: pseudonymisation salt for the keys in ``meta`` (:func:`medssl.io.deid.get_salt`).
        limits: size guard checked from the headers before any pixel is decoded (:mod:`medssl.io.limits`).

    Raises:
        NotAnImageError: the file, or every DICOM file found, holds no image.
        VolumeReadError: anything else that prevents a trustworthy volume; the message names the
            file or series and the reason.
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        header = _read_headers([os.fspath(source)], salt, quiet=False)[0]
        if header.status == "non-image":
            raise NotAnImageError(header.path, header.reason or "holds no image")
        if header.status == "error":
            raise VolumeReadError(header.path, header.reason or "unreadable")
        if series_uid is not None and header.series_uid != series_uid:
            raise VolumeReadError(header.path, f"belongs to series {header.series_uid}, not {series_uid}")
        return read_plan(plan_file(header, on_uneven=on_uneven, limits=limits), reorient=reorient)

    if isinstance(source, (str, os.PathLike)):
        origin = os.fspath(source)
        if not os.path.isdir(origin):
            raise VolumeReadError(origin, "no such file or folder")
        paths = list_files(origin)
    else:
        paths = [os.fspath(p) for p in source]
        origin = os.path.commonpath(paths) if paths else "<empty list>"
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise VolumeReadError(missing[0], "no such file" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    headers = _read_headers(paths, salt, quiet=True)
    groups = group_by_series(headers)
    if not groups:
        non_images = [h for h in headers if h.status == "non-image"]
        if non_images:
            kinds = sorted({h.sop_class_name or h.modality for h in non_images})
            raise NotAnImageError(origin, f"holds only non-image DICOM objects ({', '.join(kinds)})")
        nifti = [p for p in paths if p.lower().endswith((".nii", ".nii.gz"))]
        if nifti:
            raise VolumeReadError(origin, f"holds {len(nifti)} NIfTI file(s) and no DICOM series", hint="load each .nii/.nii.gz file")
        raise VolumeReadError(origin, "no DICOM files found")
    if series_uid is not None:
        groups = {key: group for key, group in groups.items() if group[0].series_uid == series_uid}
        if not groups:
            raise VolumeReadError(origin, f"holds no series with SeriesInstanceUID {series_uid}")
    elif len(groups) > 1:
        listing = "; ".join(
            f"{group[0].series_uid} ({group[0].modality}, {series_name(group)})"
            for group in sorted(groups.values(), key=lambda g: (g[0].series_number or 0, g[0].path))
        )
        raise VolumeReadError(origin, f"holds {len(groups)} series: {listing}", hint="pass series_uid= to choose one")
    (group,) = groups.values()
    for header in group:
        if header.status == "error":
            raise VolumeReadError(header.path, header.reason or "unreadable", hint="remove or repair this file")
    plans = plan_series(group, on_uneven=on_uneven, limits=limits)
    if len(plans) > 1 and all(plan.echo is not None for plan in plans):
        listing = ", ".join(f"{plan.echo_label} ({len(plan.headers)} files)" for plan in plans)
        raise VolumeReadError(
            series_name(group),
            f"the series holds {len(plans)} echoes, one volume each: {listing}",
            hint="load one echo's files as a list (a manifest lists one row per echo, with its files)",
        )
    if len(plans) > 1:
        raise VolumeReadError(
            series_name(group),
            f"the series holds {len(plans)} separate images that do not form one volume (no slice positions, or multi-frame files)",
            hint="load one file at a time",
        )
    return read_plan(plans[0], reorient=reorient)
