"""Fake but realistic patient identities for the synthetic archive.

The synthetic DICOM headers carry what a real export carries (name, ID, birth date, accession
number, institution, station, operator, referring physician), so that de-identification
(:mod:`medssl.io.deid`) has something to remove and its tests can search every output for these
planted values. Every value is invented: names are drawn from short lists of common surnames and
given names, numbers from the seeded generator. None belongs to a real person.

Example:
    >>> import numpy as np
    >>> person = draw_identity(np.random.default_rng(0), sex="F")
    >>> person.dicom_name.count("^"), len(person.patient_id), person.sex
    (1, 8, 'F')
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np

SURNAMES = (
    "MUELLER", "SMITH", "GARCIA", "NGUYEN", "KOWALSKI", "ROSSI", "JOHANSSON", "OKAFOR", "TANAKA",
    "DUBOIS", "SILVA", "MURPHY", "SCHMIDT", "HANSEN", "NOVAK", "PETROV", "KHAN", "LOPEZ", "BROWN",
    "FISCHER", "VAN DER BERG", "O'NEILL", "YILMAZ", "COHEN",
)
GIVEN_NAMES_F = ("ANNA", "MARIA", "SOFIA", "EMMA", "LENA", "AMARA", "YUKI", "CHLOE", "INGRID", "FATIMA", "ROSA")
GIVEN_NAMES_M = ("JOHN", "LUCAS", "AHMED", "PIOTR", "MATTEO", "KENJI", "OLIVER", "DAVID", "ERIK", "CHIDI", "LUIS")
INSTITUTIONS = (
    ("St. Elsewhere General Hospital", "12 Harbour Road, Springfield"),
    ("Mercy West Medical Center", "400 Lakeview Avenue, Riverton"),
    ("Riverside University Hospital", "1 Campus Drive, Northbridge"),
)
STATIONS = ("CT01-ER", "CTSCAN2", "SOMATOM-R3", "MR3T-NEURO", "MRI_1_5T")
OPERATORS = ("TECH^JANE", "RADTECH^PAUL", "OPERATOR^KIM")


@dataclass(frozen=True)
class FakeIdentity:
    """A synthetic patient's identifiers, as a PACS holds them."""

    family_name: str
    given_name: str
    patient_id: str
    birth_date: str  # YYYYMMDD
    sex: str
    institution: str
    institution_address: str
    station: str
    operator: str
    referring_physician: str

    @property
    def dicom_name(self) -> str:
        """``FAMILY^GIVEN`` (DICOM person name)."""
        return f"{self.family_name}^{self.given_name}"

    @property
    def folder_name(self) -> str:
        """How a PACS export names the patient's folder: ``FAMILY^GIVEN_ID`` (an identifier!)."""
        return f"{self.family_name}^{self.given_name}_{self.patient_id}"

    def age_on(self, date: str) -> str:
        """DICOM age string (``"063Y"``) on ``date`` (YYYYMMDD)."""
        born = datetime.date(int(self.birth_date[:4]), int(self.birth_date[4:6]), int(self.birth_date[6:]))
        day = datetime.date(int(date[:4]), int(date[4:6]), int(date[6:]))
        years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
        return f"{years:03d}Y"


def draw_identity(rng: np.random.Generator, sex: str | None = None) -> FakeIdentity:
    """Draw an invented patient (born 1935-1995) treated at one of three invented hospitals."""
    sex = sex or str(rng.choice(["F", "M"]))
    given = GIVEN_NAMES_F if sex == "F" else GIVEN_NAMES_M
    born = datetime.date(1935, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 60 * 365)))
    institution, address = INSTITUTIONS[int(rng.integers(0, len(INSTITUTIONS)))]
    return FakeIdentity(
        family_name=str(rng.choice(SURNAMES)),
        given_name=str(rng.choice(given)),
        patient_id=f"{int(rng.integers(10_000_000, 99_999_999)):08d}",
        birth_date=born.strftime("%Y%m%d"),
        sex=sex,
        institution=institution,
        institution_address=address,
        station=str(rng.choice(STATIONS)),
        operator=str(rng.choice(OPERATORS)),
        referring_physician=f"DR^{rng.choice(SURNAMES)}",
    )


def draw_study_date(rng: np.random.Generator, after: str | None = None) -> str:
    """A study date in 2019-2024 (YYYYMMDD), 3-18 months after ``after`` when given (a follow-up)."""
    if after is None:
        day = datetime.date(2019, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 4 * 365)))
    else:
        previous = datetime.date(int(after[:4]), int(after[4:6]), int(after[6:]))
        day = previous + datetime.timedelta(days=int(rng.integers(90, 550)))
    return day.strftime("%Y%m%d")


def draw_accession(rng: np.random.Generator) -> str:
    """A 10-character accession number (``A`` and nine digits)."""
    return f"A{int(rng.integers(100_000_000, 999_999_999)):09d}"
