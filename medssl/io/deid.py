"""De-identification: the only place where patient identifiers are read, and salted pseudonyms made.

Two rules, after the DICOM basic confidentiality profile (PS3.15 Annex E) in its simplest safe form:

* **Allow-list, not deny-list.** ``Volume.meta`` and the manifest copy only the acquisition fields in
  :data:`ACQUISITION_FIELDS` (modality, scanner, field strength, kVp, slice thickness, body part,
  series description, sequence parameters...). Anything not on the list (names, IDs, birth dates,
  UIDs, accession numbers, dates and times, institution, physicians, device serial numbers and
  software versions (which carry build dates), private tags) is never copied.
  Free-text descriptions are on the list because they are needed to tell series apart; scanners do
  not put names there, but an export where a technologist did will carry them through.
* **Salted pseudonyms for grouping keys.** Patient, study, series and instance keys are the keyed
  BLAKE2b hash (RFC 7693; a keyed hash is a MAC, like HMAC, and faster) of ``kind + NUL + value``
  with the salt as key, 64 bits long, written ``"<kind>-<16 hex>"``.
  Without the salt a key cannot be linked back to its identifier (no dictionary attack on short
  patient IDs); with the same salt the same patient gets the same key in every scan, which patient-
  level splits need.

The salt comes from the ``salt`` argument, else the environment variable ``MEDSSL_DEID_SALT``, else
:data:`DEFAULT_SALT` with a logged warning: the default is public (it is in this file), so keys made
with it are only pseudonyms against a casual reader. Set your own secret salt for real data and keep
it (the same salt gives the same keys across re-scans).

Gap filled here: pydicom reads identifiers but has no pseudonymisation; ``deid`` tools anonymise
whole files (this module never writes DICOM, it only decides what leaves a header).

Example:
    >>> key = pseudonymize("PAT-00123", "patient", salt="my-secret")
    >>> key.startswith("patient-"), len(key)
    (True, 24)
    >>> key == pseudonymize(" PAT-00123 ", "patient", salt="my-secret")  # DICOM padding ignored
    True
    >>> key == pseudonymize("PAT-00123", "patient", salt="other-salt")
    False
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from typing import Any, Callable, Mapping

logger = logging.getLogger(__name__)

#: Environment variable holding the pseudonymisation salt.
SALT_ENV = "MEDSSL_DEID_SALT"

#: The documented project default; public, hence only for synthetic or already anonymised data.
DEFAULT_SALT = "medssl-default-salt-replace-me"

#: DICOM keywords copied into ``Volume.meta`` and the manifest (acquisition fields only).
ACQUISITION_FIELDS: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "ImagingFrequency",
    "KVP",
    "XRayTubeCurrent",
    "ExposureTime",
    "Exposure",
    "ConvolutionKernel",
    "SliceThickness",
    "SpacingBetweenSlices",
    "BodyPartExamined",
    "SeriesDescription",
    "SeriesNumber",
    "ImageType",
    "ScanningSequence",
    "SequenceVariant",
    "MRAcquisitionType",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "EchoTrainLength",
    "ReceiveCoilName",
    "PatientPosition",
    "ViewPosition",
    "ImageLaterality",
    "PhotometricInterpretation",
    "BitsStored",
    "RescaleType",
)

#: Identifier attributes this module reads to build keys (and that nothing else may copy).
IDENTIFIER_FIELDS: tuple[str, ...] = (
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)

_warned_default = False


def get_salt(salt: str | bytes | None = None) -> bytes:
    """The salt to use: ``salt`` if given, else ``$MEDSSL_DEID_SALT``, else :data:`DEFAULT_SALT`.

    The default logs a warning once per process: it must be replaced for real patient data.
    """
    global _warned_default
    if salt is None:
        salt = os.environ.get(SALT_ENV) or None
    if salt is None:
        if not _warned_default:
            logger.warning(
                "de-identification uses the public default salt; set %s (or pass salt=) to a secret "
                "value before scanning real patient data",
                SALT_ENV,
            )
            _warned_default = True
        salt = DEFAULT_SALT
    if isinstance(salt, str):
        salt = salt.encode("utf-8")
    if not salt:
        raise ValueError("the de-identification salt must not be empty")
    return salt


def salt_fingerprint(salt: str | bytes | None = None) -> str:
    """A short public fingerprint of the salt, to tell whether two manifests used the same one."""
    return pseudonymize("medssl-salt-check", "salt", salt=salt)


def _normalise(value: str | bytes) -> bytes:
    """Identifier bytes without DICOM padding (spaces, NUL) so that equal identifiers hash equal."""
    if isinstance(value, str):
        # surrogateescape: a file name that is not valid UTF-8 (bytes ff fe) arrives from os as
        # lone surrogates; they map back to its original bytes, so its key is the key of those bytes
        value = value.encode("utf-8", "surrogateescape")
    return bytes(value).strip(b" \x00")


def pseudonymize(value: str | bytes, kind: str, salt: str | bytes | None = None) -> str:
    """Salted pseudonym ``"<kind>-<16 hex digits>"`` of ``value`` (keyed BLAKE2b, 64 bits).

    ``kind`` (``"patient"``, ``"study"``, ``"series"``, ``"volume"``...) separates name spaces, so a
    patient ID and a study UID that happen to be equal get different keys.
    """
    return _pseudonym(_normalise(value), kind, get_salt(salt))


@functools.lru_cache(maxsize=1 << 14)
def _pseudonym(value: bytes, kind: str, salt: bytes) -> str:
    """Cached: the slices of a series repeat the same patient, study and series identifiers."""
    message = kind.encode("utf-8") + b"\x00" + value
    digest = hashlib.blake2b(message, key=_blake_key(salt), digest_size=8).hexdigest()
    return f"{kind}-{digest}"


def _blake_key(salt: bytes) -> bytes:
    """BLAKE2b keys are at most 64 bytes; a longer salt is first hashed to 64 bytes."""
    return salt if len(salt) <= 64 else hashlib.blake2b(salt, digest_size=64).digest()


def identity_keys(raw: Callable[[str], bytes | None], salt: str | bytes | None = None) -> dict[str, str | None]:
    """Pseudonymous keys of one DICOM header, from a ``raw(keyword) -> bytes | None`` accessor.

    ``patient_key`` hashes ``PatientID`` qualified by ``IssuerOfPatientID`` (IDs are unique per
    issuer); without an ID, ``PatientName`` + ``PatientBirthDate``; without those, the study UID (each
    study then counts as its own patient: two studies of one unnamed patient could land on both
    sides of a split, so anonymised exports should keep a pseudonymous PatientID). ``study_key``, ``series_key`` and ``instance_key`` hash the UIDs.
    """
    values = {name: _normalise(raw(name) or b"") for name in IDENTIFIER_FIELDS}
    if values["PatientID"]:
        patient = b"id:" + values["IssuerOfPatientID"] + b"|" + values["PatientID"]
    elif values["PatientName"] or values["PatientBirthDate"]:
        patient = b"name:" + values["PatientName"] + b"|" + values["PatientBirthDate"]
    elif values["StudyInstanceUID"]:
        logger.debug("a DICOM file has no patient ID or name; its study is keyed as its own patient")
        patient = b"study:" + values["StudyInstanceUID"]
    else:
        patient = b""

    def key(value: bytes, kind: str) -> str | None:
        return pseudonymize(value, kind, salt) if value else None

    return {
        "patient_key": key(patient, "patient"),
        "study_key": key(values["StudyInstanceUID"], "study"),
        "series_key": key(values["SeriesInstanceUID"], "series"),
        "instance_key": key(values["SOPInstanceUID"], "instance"),
    }


def acquisition_meta(value: Callable[[str], Any]) -> dict[str, Any]:
    """The allow-listed acquisition fields, from a ``value(keyword) -> python value | None`` accessor.

    Values are plain JSON-friendly Python (``str``, ``int``, ``float`` or lists of them); absent and
    empty fields are left out.
    """
    meta: dict[str, Any] = {}
    for keyword in ACQUISITION_FIELDS:
        item = value(keyword)
        if item is None or item == "" or item == []:
            continue
        meta[keyword] = item
    return meta


def filter_meta(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only allow-listed keys of a mapping (for example a BIDS JSON sidecar of a NIfTI file).

    BIDS spells ``ManufacturerModelName`` as ``ManufacturersModelName``; it is mapped to the DICOM name.
    """
    renamed = {("ManufacturerModelName" if k == "ManufacturersModelName" else k): v for k, v in fields.items()}
    return acquisition_meta(lambda keyword: _json_value(renamed.get(keyword)))


def _json_value(value: Any) -> Any:
    if isinstance(value, (str, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return list(value)
    return None
