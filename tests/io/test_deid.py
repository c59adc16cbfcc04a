"""De-identification: pseudonyms, salt handling, allow-list; identifiers planted and searched for."""

from __future__ import annotations

import json
import logging

import pytest

from medssl.io import deid, load_volume
from tests.io.helpers import PLANTED, UIDS, planted_strings, write_planted_series

def test_pseudonyms_are_stable_salted_and_typed():
    key = deid.pseudonymize("MRN-1", "patient", salt="a")
    assert key == deid.pseudonymize("MRN-1  ", "patient", salt="a") == deid.pseudonymize(b"MRN-1\x00", "patient", salt="a")
    assert key != deid.pseudonymize("MRN-1", "patient", salt="b")
    assert key != deid.pseudonymize("MRN-1", "study", salt="a")
    assert key != deid.pseudonymize("MRN-2", "patient", salt="a")
    assert key.startswith("patient-") and len(key) == len("patient-") + 16
    long_salt = "x" * 200
    assert deid.pseudonymize("MRN-1", "patient", salt=long_salt) != deid.pseudonymize("MRN-1", "patient", salt="x" * 201)


def test_salt_comes_from_argument_then_environment_then_a_warned_default(monkeypatch, caplog):
    monkeypatch.setenv(deid.SALT_ENV, "from-env")
    assert deid.get_salt("arg") == b"arg"
    assert deid.get_salt() == b"from-env"
    monkeypatch.delenv(deid.SALT_ENV)
    monkeypatch.setattr(deid, "_warned_default", False)
    with caplog.at_level(logging.WARNING, logger="medssl.io.deid"):
        assert deid.get_salt() == deid.DEFAULT_SALT.encode()
        deid.get_salt()
    warnings = [r for r in caplog.records if deid.SALT_ENV in r.getMessage()]
    assert len(warnings) == 1  # once per process
    with pytest.raises(ValueError):
        deid.get_salt(b"")


def test_identity_keys_use_issuer_and_fall_back_to_name():
    fields = {"PatientID": b"123", "IssuerOfPatientID": b"HOSP-A", "StudyInstanceUID": b"1.2.3"}
    a = deid.identity_keys(fields.get, salt="s")
    b = deid.identity_keys({**fields, "IssuerOfPatientID": b"HOSP-B"}.get, salt="s")
    assert a["patient_key"] != b["patient_key"] and a["study_key"] == b["study_key"]
    by_name = deid.identity_keys({"PatientName": b"DOE^J", "PatientBirthDate": b"19700101"}.get, salt="s")
    assert by_name["patient_key"].startswith("patient-") and by_name["series_key"] is None


def test_meta_keeps_the_allow_list_and_no_identifier(tmp_path, caplog):
    write_planted_series(tmp_path / "series")
    with caplog.at_level(logging.DEBUG, logger="medssl"):
        volume = load_volume(tmp_path / "series", salt="test-salt")
    text = json.dumps(volume.meta)
    for planted in planted_strings() + ["PLANTEDNAME"]:
        assert planted not in text, planted
        assert planted not in caplog.text, planted
    assert volume.meta["Manufacturer"] == "ACME" and volume.meta["BodyPartExamined"] == "CHEST"
    assert volume.meta["SeriesDescription"] == "AX 2.0" and volume.meta["Modality"] == "CT"
    assert set(volume.meta).isdisjoint(deid.IDENTIFIER_FIELDS)
    assert volume.meta["patient_key"] == deid.pseudonymize(b"id:|" + PLANTED["patient_id"].encode(), "patient", "test-salt")
    assert volume.meta["series_key"] == deid.pseudonymize(UIDS["series_uid"], "series", "test-salt")


def test_filter_meta_maps_bids_names_and_drops_everything_else():
    fields = {"ManufacturersModelName": "Prisma", "MagneticFieldStrength": 3, "PatientName": "X", "AcquisitionTime": "10:00"}
    assert deid.filter_meta(fields) == {"ManufacturerModelName": "Prisma", "MagneticFieldStrength": 3}
