"""External test preprocessing (paper 2.1.4): k-space to 320 x 320, centre patches, labels, facial slices."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from magphase.data.external import prepare_external, read_facial_slices
from magphase.data.store import Store
from magphase.errors import DataError
from magphase.mri.complex import magnitude_phase
from magphase.mri.fft import fft2c, ifft2c
from magphase.mri.kspace import resize_kspace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_fixtures import write_phantom_volume  # noqa: E402

CENTRE = {(75, 75), (75, 150), (150, 75), (150, 150)}


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    root = tmp_path_factory.mktemp("ext")
    raw = root / "raw"
    raw.mkdir()
    rng = np.random.default_rng(3)
    truth = {}
    for stem, shape in (
        ("ext_t1tse_001", (256, 256)),
        ("ext_t2tirm_002", (384, 384)),
        ("ext_t2tirm_003", (256, 256)),
    ):
        images, _, _ = write_phantom_volume(
            raw / f"{stem}.h5", rng, n_slices=3, shape=shape, acquisition=stem.split("_")[1].upper()
        )
        truth[stem] = images
    write_phantom_volume(raw / "ext_unlisted_009.h5", rng, n_slices=2, shape=(256, 256), acquisition="T1TSE")
    (root / "labels.csv").write_text(
        "file,label,sequence\n"
        "ext_t1tse_001.h5,Healthy,T1-TSE\n"
        "ext_t2tirm_002,metastasis,T2-TIRM\n"
        "ext_t2tirm_003,unclear,T2-TIRM\n"
        "ext_missing_004,healthy,T1-TSE\n"
    )
    (root / "facial.csv").write_text(
        "file,slice,facial\next_t1tse_001,0,1\next_t1tse_001,1,0\next_t2tirm_002,2,yes\n"
    )
    out = root / "out"
    summary = prepare_external(raw, root / "labels.csv", out, facial_csv=root / "facial.csv", seed=0)
    return out, summary, truth


def test_centre_patches_labels_and_facial_slices(external):
    out, summary, _ = external
    m = Store(out / "patches").manifest
    assert set(m["split"]) == {"external"}
    assert set(zip(m["row"], m["col"], strict=True)) == CENTRE
    per_slice = m.groupby(["volume", "slice"]).size()
    assert (per_slice == 4).all()
    t1 = m[m["volume"] == "ext_t1tse_001"]
    assert sorted(t1["slice"].unique()) == [1, 2]  # slice 0 flagged facial, slice 1 flagged 0 (kept)
    assert set(t1["label"]) == {"normal"} and set(t1["source_label"]) == {"healthy"}
    t2 = m[m["volume"] == "ext_t2tirm_002"]
    assert sorted(t2["slice"].unique()) == [0, 1] and set(t2["label"]) == {"abnormal"}
    assert set(t2["sequence"]) == {"T2-TIRM"}
    assert summary.n_patches == len(m) == 16
    assert (m["brain_fraction"] > 0.9).all()  # the centre patches avoid skull and background


def test_rejects(external):
    out, _, _ = external
    rejects = pd.read_csv(out / "rejects.csv", keep_default_na=False)
    reasons = {Path(f).stem: r for f, r in zip(rejects["file"], rejects["reason"], strict=True)}
    assert "unknown label 'unclear'" in reasons["ext_t2tirm_003"]
    assert "not found" in reasons["ext_missing_004"]
    assert "not in the labels CSV" in reasons["ext_unlisted_009"]
    table = pd.read_csv(out / "table_external.csv", keep_default_na=False)
    assert table.iloc[-1]["patches"] == 16 and table.iloc[-1]["volumes"] == 2


@pytest.mark.parametrize("stem", ["ext_t1tse_001", "ext_t2tirm_002"])
def test_kspace_is_zero_filled_or_cropped_to_320(external, stem):
    """Patches match the truth image brought to 320 x 320 by symmetric k-space zero-fill/crop."""
    out, _, truth = external
    store = Store(out / "patches")
    m = store.manifest
    reference = np.asarray(ifft2c(resize_kspace(fft2c(truth[stem]), (320, 320))))
    for idx in np.flatnonzero((m["volume"] == stem).to_numpy()):
        row = m.iloc[idx]
        mag, _ = magnitude_phase(store.read("patches", idx))
        ref = np.abs(reference[row["slice"]])
        ref = ref[row["row"] : row["row"] + 96, row["col"] : row["col"] + 96] / ref.max()
        assert np.corrcoef(mag.ravel(), ref.ravel())[0, 1] > 0.95


def test_bad_facial_csv(tmp_path):
    (tmp_path / "f.csv").write_text("file,slice,facial\na,x,1\n")
    with pytest.raises(DataError, match="slice"):
        read_facial_slices(tmp_path / "f.csv")
    (tmp_path / "g.csv").write_text("file,facial\na,1\n")
    with pytest.raises(DataError, match="slice"):
        read_facial_slices(tmp_path / "g.csv")
