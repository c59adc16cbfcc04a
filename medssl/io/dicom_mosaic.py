"""Siemens mosaic images: one DICOM file whose single frame tiles the slices of a whole volume.

Siemens fMRI and diffusion series store each time point (or diffusion direction) as one "mosaic":
``n`` slices of ``r x c`` pixels laid out row by row on a ``side x side`` grid, ``side =
ceil(sqrt(n))``, in a frame of ``Rows x Columns = side*r x side*c``. The file says so with
``MOSAIC`` in ImageType and gives ``n`` in the private element (0019,100A) NumberOfImagesInMosaic
(creator ``SIEMENS MR HEADER``) or in its CSA image header (0029,1010).

Geometry (as nibabel's ``MosaicWrapper`` and dcm2niix compute it): ImagePositionPatient is the
top-left corner of the *whole mosaic* seen as one image, so the first slice's corner is

    IPP_0 = IPP + F_row * dc * (Columns - c') / 2 + F_col * dr * (Rows - r') / 2,

with tiles of ``r' = Rows / side`` by ``c' = Columns / side`` pixels (a mosaic whose size is not a
multiple of ``side`` is refused: its tiles cannot be found); slice ``k`` lies at ``IPP_0 + k * s * n̂`` where
``s`` is SpacingBetweenSlices (else SliceThickness) and ``n̂`` the CSA header's SliceNormalVector,
else ``F_row x F_col``. Supported: files with (0019,100A) or a CSA image header (nibabel's
``csareader`` parses it); a mosaic without either is loaded as the plain 2D tile image.

Gap filled here: pydicom decodes the mosaic as one 2D frame; nibabel's DICOM wrappers unpack it but
are marked experimental and assemble no series.

Example:
    >>> import numpy as np
    >>> tiles = split_mosaic(np.arange(16).reshape(1, 4, 4, 1), (3, 2, 2))
    >>> tiles.shape, tiles[2, :, :, 0].tolist()
    ((3, 2, 2, 1), [[8, 9], [12, 13]])
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom

from medssl.io.dicom_geometry import PlaneGeometry, orientation_axes


@dataclass(frozen=True)
class MosaicInfo:
    """How many slices a mosaic holds and, when its CSA header gives it, the slice normal (LPS)."""

    n_images: int
    slice_normal: tuple[float, float, float] | None = None


def is_mosaic(image_type: Any) -> bool:
    """ImageType holds the value ``MOSAIC``."""
    values = image_type if isinstance(image_type, (list, tuple)) else [image_type]
    return any(str(v).strip().upper() == "MOSAIC" for v in values if v is not None)


def _private_value(dataset: pydicom.Dataset, group: int, creator: str, element: int) -> Any:
    from pydicom.tag import Tag

    for block in range(0x10, 0x100):
        owner = dataset.get(Tag(group, block))
        if owner is None:
            continue
        value = owner.value.decode("latin-1") if isinstance(owner.value, bytes) else str(owner.value)
        if value.strip() == creator:
            item = dataset.get(Tag(group, (block << 8) | element))
            return None if item is None else item.value
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, (bytes, bytearray)):
        if len(value) in (2, 4):
            return int.from_bytes(value, "little")
        try:
            return int(value.decode("ascii").strip(" \x00"))
        except ValueError:
            return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def mosaic_info(path: str | os.PathLike, dataset: pydicom.Dataset | None = None) -> MosaicInfo | None:
    """The number of slices of a mosaic file and its CSA slice normal, or ``None`` when neither
    (0019,100A) nor the CSA image header says how many slices it holds."""
    if dataset is None:
        dataset = pydicom.dcmread(os.fspath(path), stop_before_pixels=True, force=True)
    count = _as_int(_private_value(dataset, 0x0019, "SIEMENS MR HEADER", 0x0A))
    normal = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel.nicom warns that its DICOM readers are experimental
            from nibabel.nicom import csareader

            csa = csareader.get_csa_header(dataset, "image")
            if csa:
                count = count or csareader.get_n_mosaic(csa)
                vector = csareader.get_slice_normal(csa)
                if vector is not None and len(vector) == 3 and np.linalg.norm(vector) > 0.5:
                    normal = tuple(float(v) for v in np.asarray(vector) / np.linalg.norm(vector))
    except Exception:  # a damaged CSA header: fall back to the private element and the cross product
        pass
    if not count or count < 1:
        return None
    return MosaicInfo(int(count), normal)  # type: ignore[arg-type]


def mosaic_planes(
    info: MosaicInfo,
    rows: int,
    columns: int,
    position: tuple[float, ...] | None,
    orientation: tuple[float, ...] | None,
    pixel_spacing: tuple[float, float] | None,
    slice_spacing: float | None,
    name: str,
) -> tuple[list[PlaneGeometry], tuple[int, int]]:
    """One plane per slice of the mosaic (see the module docstring) and the tile size ``(r, c)``."""
    side = math.ceil(math.sqrt(info.n_images))
    tile_rows, tile_columns = rows // side, columns // side
    if tile_rows < 1 or tile_columns < 1 or rows % side or columns % side:
        raise ValueError(f"a {rows}x{columns} mosaic cannot hold {info.n_images} equal tiles on a {side}x{side} grid")
    if position is None or orientation is None:
        planes = [PlaneGeometry(None, orientation, pixel_spacing, tile_rows, tile_columns)] * info.n_images  # type: ignore[arg-type]
        return planes, (tile_rows, tile_columns)
    f_row, f_col, cross = orientation_axes(orientation, name)
    row_spacing, column_spacing = pixel_spacing or (1.0, 1.0)
    corner = (
        np.asarray(position, dtype=np.float64)
        + f_row * column_spacing * (columns - tile_columns) / 2.0
        + f_col * row_spacing * (rows - tile_rows) / 2.0
    )
    normal = np.asarray(info.slice_normal) if info.slice_normal is not None else cross
    step = float(slice_spacing) if slice_spacing and slice_spacing > 0 else 1.0
    planes = [
        PlaneGeometry(tuple(float(v) for v in corner + k * step * normal), orientation, pixel_spacing, tile_rows, tile_columns)  # type: ignore[arg-type]
        for k in range(info.n_images)
    ]
    return planes, (tile_rows, tile_columns)


def split_mosaic(frames: np.ndarray, layout: tuple[int, int, int]) -> np.ndarray:
    """Decoded mosaic frames ``(1, Rows, Columns, S)`` -> slices ``(n, r, c, S)``, tiles taken row by
    row; ``layout`` is ``(n, r, c)``."""
    count, tile_rows, tile_columns = layout
    side = math.ceil(math.sqrt(count))
    mosaic = frames[0]
    tiles = [
        mosaic[(k // side) * tile_rows : (k // side + 1) * tile_rows, (k % side) * tile_columns : (k % side + 1) * tile_columns]
        for k in range(count)
    ]
    return np.stack(tiles)
