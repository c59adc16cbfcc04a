"""The docs' code blocks that a user copies run as written.

A fenced ``bash`` or ``python`` block preceded by the line ``<!-- docs-test: run -->`` is executed:
the blocks of one page in order, in one temporary folder (``configs/`` linked in, as in the
repository root), bash blocks in one shell session (what a block exports, the next one sees),
python blocks by the interpreter running the tests, the ``medssl`` command of this checkout on the
PATH. Blocks without the marker (a demo run folder, a GPU cluster, a full-size study) are not run.

* docs/quickstart.md, section 4: a brain MR archive from the folder to the report (synthetic
  stand-in, CPU sizes: about a minute);
* docs/studies.md, section 1: the labels table joined from a manifest and an annotation list, on a
  small archive made here (the annotation list is what the page says the user brings);
* docs/nnunet.md: pretraining the network nnU-Net planned, its checkpoint loaded by nnU-Net's own
  loader, and a MONAI bundle loaded by ``monai.bundle.load`` (needs ``medssl[nnunet]``'s modules,
  which ``make test`` installs; about 30 s).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- docs-test: run -->"
BLOCK = re.compile(r"^" + re.escape(MARKER) + r"\n```(bash|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def marked_blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of every marked block of ``page``, in order."""
    text = page.read_text(encoding="utf-8")
    blocks = BLOCK.findall(text)
    assert len(blocks) == text.count(MARKER), f"{page.name}: a marker not followed by a ```bash/```python block"
    return blocks


def run_blocks(blocks: list[tuple[str, str]], folder: Path) -> str:
    """Run the blocks in ``folder``; returns their combined output; fails naming the block that failed."""
    (folder / "configs").symlink_to(ROOT / "configs")
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=python_path, MEDSSL_PROGRESS="0", OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env_file = folder / ".docs-test-env"
    output = []
    for number, (language, code) in enumerate(blocks, start=1):
        if language == "bash":
            command = ["bash", "-c", f"set -e -o pipefail\n{code}\nenv -0 > {env_file}"]
        else:
            command = [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        output.append(done.stdout + done.stderr)
        assert done.returncode == 0, f"block {number} ({language}) failed:\n{code}\n--- output:\n{output[-1][-3000:]}"
        if language == "bash":
            pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
            env = dict(pairs)
    return "\n".join(output)


def test_quickstart_walks_an_mr_archive_from_folder_to_report(tmp_path):
    blocks = marked_blocks(ROOT / "docs" / "quickstart.md")
    assert [language for language, _ in blocks] == ["bash", "python", "bash", "bash", "python"]
    output = run_blocks(blocks, tmp_path)
    run = tmp_path / "runs" / "study_mr"
    assert "labeled cases of" in output and "data.exclude: 16 volume(s)" in output
    assert "volumes by modality: MR 8 (preset mr)" in output
    assert "dice: mean ± sd over seeds" in output  # medssl study printed its table
    assert (run / "report.html").is_file() and len(list((run / "overlays").glob("*.png"))) == 3
    pretrained_on = pd.read_csv(tmp_path / "runs" / "simclr_mr" / "metrics.csv")
    assert len(pretrained_on)  # pretraining ran on what was left after data.exclude
    labels = pd.read_csv(tmp_path / "hospital" / "labels_mr.csv")
    manifest = pd.read_csv(tmp_path / "work" / "manifest.csv")
    assert set(labels["patient_key"]) <= set(manifest["patient_key"])


@pytest.fixture
def archive_with_annotations(tmp_path, monkeypatch):
    """What docs/studies.md section 1 assumes the user has: archive/, its manifest, my_annotations.csv."""
    from medssl.data.manifest import write_manifest
    from medssl.synthetic import make_synthetic_cohort

    monkeypatch.setenv("MEDSSL_DEID_SALT", "docs-test-salt")
    make_synthetic_cohort(tmp_path, n_ct=0, n_mr=4, n_unlabeled_ct=0, n_unlabeled_mr=1, size=16, messy=False,
                          progress=False, overwrite=True)
    write_manifest(tmp_path / "archive", tmp_path / "manifest.csv", progress=False)
    synth = pd.read_csv(tmp_path / "labels.csv")
    annotations = pd.DataFrame({"image": synth["image"].str.replace("archive/", "", regex=False),
                                "mask": synth["mask"], "label": synth["label"]})
    annotations.to_csv(tmp_path / "my_annotations.csv", index=False)
    (tmp_path / "labels.csv").unlink()  # the example writes it
    return tmp_path


def test_studies_own_data_example_builds_a_labels_table_a_study_reads(archive_with_annotations):
    from medssl.config import load_config
    from medssl.eval.data import load_labeled_data

    folder = archive_with_annotations
    run_blocks(marked_blocks(ROOT / "docs" / "studies.md"), folder)
    labels = pd.read_csv(folder / "labels.csv")
    assert len(labels) == 4 and {"case_id", "image", "mask", "label", "patient_key", "modality"} <= set(labels.columns)
    config = load_config(None, [f"study.labels={folder / 'labels.csv'}", "data.modalities=[MR]",
                                "data.preprocess.target_spacing=[8.0, 8.0, 8.0]"])
    data = load_labeled_data(config, folder / "cache")
    assert sorted(data.cases) == sorted(labels["case_id"])


def test_nnunet_page_pretrains_the_planned_network_and_exports_for_nnunet_and_monai(tmp_path):
    pytest.importorskip("dynamic_network_architectures")
    pytest.importorskip("nnunetv2.utilities.get_network_from_plans")
    blocks = marked_blocks(ROOT / "docs" / "nnunet.md")
    assert [language for language, _ in blocks] == ["bash", "bash", "python", "bash", "python"]
    output = run_blocks(blocks, tmp_path)
    run = tmp_path / "runs" / "spark_nnunet"
    assert "Loading pretrained weights from file" in output  # nnU-Net's loader ran (and its asserts passed)
    assert "spark 5 steps; pretrained (spark)" in output
    assert "-pretrained_weights nnunet_pretrained.pth" in output
    assert "PlainConvUNet (1, 2, 16, 32, 32)" in output  # the bundle's network, on the plans' patch
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())  # from the plans, in medssl's (x, y, z) order
    assert config["pretrain"]["augmentation"]["patch_size"] == [32, 32, 16]
    assert config["data"]["preprocess"]["target_spacing"] == [12.0, 12.0, 16.0]
    assert (tmp_path / "bundles" / "spark_nnunet" / "configs" / "metadata.json").is_file()
