"""``magphase prepare`` end to end on tiny phantom volumes: rules, rejects, resume, shards, CLI."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import magphase.data.prepare as prep
from magphase.config import PrepareConfig
from magphase.conventions import PATCH_SIZE
from magphase.data.store import MANIFEST_COLUMNS, Store
from magphase.mri.complex import magnitude_phase

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_fixtures import make_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    return make_dataset(root, np.random.default_rng(7))


@pytest.fixture(scope="module")
def prepared(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "run"
    summary = prep.prepare(dataset["raw"], out, annotations=dataset["csv"], cfg=PrepareConfig(), seed=11)
    return out, summary


def test_store_layout_and_counts(prepared):
    out, summary = prepared
    store = Store(out / "patches")
    m = store.manifest
    assert tuple(m.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert store.arrays == {"patches": (2, PATCH_SIZE, PATCH_SIZE)} and len(store) == summary.n_patches
    assert m["patch_id"].tolist() == list(range(len(m)))
    cfg = PrepareConfig()
    per_volume = m.groupby("volume").size()
    assert 10 <= per_volume.min() and per_volume.max() <= 40
    for _vol, g in m.groupby("volume"):
        source = g["source_label"].iloc[0]
        assert g["split"].nunique() == 1  # every patch of a volume in one split
        if source == "normal":
            assert cfg.normal_patches[0] <= len(g) <= cfg.normal_patches[1] and set(g["label"]) == {"normal"}
        elif source == "unlabeled":
            assert len(g) == cfg.unlabeled_patches[0] and set(g["label"]) == {"unlabeled"}
        else:
            abn = g[g["label"] == "abnormal"]
            assert cfg.abnormal_box_patches[0] <= len(abn) <= cfg.abnormal_box_patches[1]
            assert (abn["box_overlap"] >= cfg.min_box_overlap).all() and (abn["box_id"] >= 0).all()
            nrm = g[g["label"] == "normal"]
            assert cfg.abnormal_volume_normal_patches[0] <= len(nrm) <= cfg.abnormal_volume_normal_patches[1]
    assert (m["brain_fraction"] >= 0.8).all()
    # Every patch carries its volume's dominant finding: the most frequent box label of abnormal volumes.
    findings = m.groupby("volume")["finding"].agg(lambda f: set(f.fillna("")))
    assert all(len(f) == 1 for f in findings)
    for vol, g in m.groupby("volume"):
        f = g["finding"].fillna("").iloc[0]
        if g["source_label"].iloc[0] == "abnormal":
            top = g.loc[g["label"] == "abnormal", "box_label"].str.lower().value_counts()
            assert f != "" and f.lower() in set(top.index), (vol, f, top)
        else:
            assert f == "", vol
    patches = store.read("patches", slice(None))
    mag, _ = magnitude_phase(patches)
    assert mag.max() <= 1.0 + 1e-5 and np.isfinite(patches).all()
    assert not list(out.glob("**/*.tmp*"))


def test_rejects_report_corrupt_and_excluded(prepared):
    out, _ = prepared
    rejects = pd.read_csv(out / "rejects.csv", keep_default_na=False)
    assert list(rejects.columns) == ["file", "field", "reason"]
    by_file = {Path(f).name: (fld, r) for f, fld, r in rejects.itertuples(index=False)}
    assert by_file["file_brain_AXT1_200_1005.h5"] == ("label", "excluded label")
    field, reason = by_file["file_brain_AXT2_209_1009.h5"]
    assert field and "HDF5" in reason
    assert len(rejects) == 2


def test_box_patches_contain_the_lesion(prepared, dataset):
    out, _ = prepared
    store = Store(out / "patches")
    m = store.manifest
    abnormal = m[m["label"] == "abnormal"]
    assert len(abnormal) > 0
    for idx, row in abnormal.iterrows():
        _, lesion = dataset["truth"][row["volume"]]
        window = lesion[
            row["slice"], row["row"] : row["row"] + PATCH_SIZE, row["col"] : row["col"] + PATCH_SIZE
        ]
        assert window.sum() > 0, "an abnormal patch must show part of the lesion"
        # The lesion is the brightest tissue: it shows at full normalised magnitude in the patch.
        mag, _ = magnitude_phase(store.read("patches", idx))
        assert mag[window].max() > 0.9
    for _, row in m[(m["source_label"] == "abnormal") & (m["label"] == "normal")].iterrows():
        _, lesion = dataset["truth"][row["volume"]]
        for s in range(max(0, row["slice"] - 1), row["slice"] + 2):
            if s < lesion.shape[0]:
                assert not lesion[
                    s, row["row"] : row["row"] + PATCH_SIZE, row["col"] : row["col"] + PATCH_SIZE
                ].any()


def test_outputs_table_figure_and_mask_agreement(prepared, dataset):
    out, summary = prepared
    t = pd.read_csv(out / "table1.csv", keep_default_na=False)
    assert t.iloc[-1]["class"] == "Total" and t.iloc[-1]["Total"] == summary.n_patches
    assert (out / "table1.md").read_text().startswith("| Class |")
    assert (out / "fig2_patches.png").stat().st_size > 10_000
    for stem, (brain, _) in dataset["truth"].items():
        if "_1005" in stem:  # the excluded volume is never processed
            continue
        with h5py.File(out / "volumes" / f"{stem}.h5") as f:
            assert prep.dice(f["brain_mask"][:] > 0, brain) >= 0.9


def test_volume_results_do_not_depend_on_order(dataset, tmp_path):
    """A volume's patches depend on (seed, name) only: process one volume alone and compare."""
    tasks = prep.discover_volumes(dataset["raw"], dataset["csv"])
    task = next(t for t in tasks if t.label == "abnormal")
    a = prep.process_volume(task, PrepareConfig(), seed=11)
    b = prep.process_volume(task, PrepareConfig(), seed=11)
    c = prep.process_volume(task, PrepareConfig(), seed=12)
    assert a.rows == b.rows and np.array_equal(a.patches, b.patches)
    assert a.rows != c.rows


def test_nifti_export_of_combined_volumes(dataset, tmp_path):
    import nibabel as nib

    out = tmp_path / "nifti_run"
    task = next(t for t in prep.discover_volumes(dataset["raw"], dataset["csv"]) if t.label == "normal")
    assert prep.run_volume(task, out, PrepareConfig(), 11, nifti=True).status == "ok"
    mag = nib.load(out / "nifti" / f"{task.volume}_mag.nii.gz")
    phase = np.asarray(nib.load(out / "nifti" / f"{task.volume}_phase.nii.gz").dataobj)
    assert mag.shape == (192, 192, 4)  # (columns, rows, slices)
    assert mag.header.get_zooms() == pytest.approx((220 / 192, 220 / 192, 5.0))
    assert np.asarray(mag.dataobj).max() == pytest.approx(1.0, abs=1e-5)  # slices normalised
    assert np.abs(phase).max() <= np.pi + 1e-6
    # A finished volume whose NIfTI files are missing is redone when NIfTI is asked for.
    (out / "nifti" / f"{task.volume}_phase.nii.gz").unlink()
    assert prep.run_volume(task, out, PrepareConfig(), 11, nifti=True).status == "ok"
    assert prep.run_volume(task, out, PrepareConfig(), 11, nifti=True).status == "cached"


def _manifest(out):
    return pd.read_csv(out / "patches" / "manifest.csv", keep_default_na=False)


def test_resume_after_a_crash_gives_the_same_store(dataset, prepared, tmp_path, monkeypatch):
    out = tmp_path / "crash"
    real = prep.process_volume
    calls = []

    def crashing(task, *args, **kwargs):
        calls.append(task.volume)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        return real(task, *args, **kwargs)

    monkeypatch.setattr(prep, "process_volume", crashing)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(dataset["raw"], out, annotations=dataset["csv"], seed=11)
    assert len(list((out / "volumes").glob("*.h5"))) == 2
    assert not (out / "patches").exists() and not list((out / "volumes").glob("*.tmp"))

    calls.clear()
    monkeypatch.setattr(
        prep, "process_volume", lambda t, *a, **k: (calls.append(t.volume), real(t, *a, **k))[1]
    )
    prep.prepare(dataset["raw"], out, annotations=dataset["csv"], seed=11, figure=False)
    assert len(calls) == 9 - 1 - 2  # 9 files, 1 excluded (never opened), 2 done before the crash
    pd.testing.assert_frame_equal(_manifest(out), _manifest(prepared[0]))
    np.testing.assert_array_equal(
        Store(out / "patches").read("patches", slice(None)),
        Store(prepared[0] / "patches").read("patches", slice(None)),
    )
    # A further run with nothing to do recomputes nothing; another seed or config invalidates the cache.
    calls.clear()
    prep.prepare(dataset["raw"], out, annotations=dataset["csv"], seed=11, figure=False)
    assert calls == []
    task = prep.discover_volumes(dataset["raw"], dataset["csv"])[0]
    key = prep.result_key(task, PrepareConfig(), 11)
    assert key != prep.result_key(task, PrepareConfig(), 12)
    assert key != prep.result_key(task, PrepareConfig(min_brain_fraction=0.9), 11)
    assert key == prep.result_key(task, PrepareConfig(nifti=True), 11)  # output-only options do not count


def test_shards_then_merge_equal_a_single_run(dataset, prepared, tmp_path):
    out = tmp_path / "sharded"
    for i in range(2):
        assert prep.prepare(dataset["raw"], out, annotations=dataset["csv"], seed=11, shard=(i, 2)) is None
    prep.prepare(
        dataset["raw"], out, annotations=dataset["csv"], seed=11, process=False, merge=True, figure=False
    )
    pd.testing.assert_frame_equal(_manifest(out), _manifest(prepared[0]))


def test_merge_refuses_missing_volumes(dataset, tmp_path):
    out = tmp_path / "partial"
    prep.prepare(dataset["raw"], out, annotations=dataset["csv"], seed=11, shard=(0, 4))
    with pytest.raises(prep.IncompleteError, match="not prepared"):
        prep.prepare(dataset["raw"], out, annotations=dataset["csv"], seed=11, process=False, merge=True)


def _cli(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "magphase"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def test_cli_dry_run_and_bad_shard(dataset, tmp_path):
    from typer.testing import CliRunner

    from magphase.cli import app
    from magphase.errors import ConfigError

    runner = CliRunner()
    base = ["prepare", "--raw", str(dataset["raw"]), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*base, "--annotations", str(dataset["csv"]), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "min_brain_fraction: 0.8" in result.output and "plan: 9 of 9 volumes" in result.output
    assert not (tmp_path / "o").exists()
    result = runner.invoke(app, [*base, "--shard", "3/2"])
    assert isinstance(result.exception, ConfigError) and "I < N" in str(result.exception)
    result = runner.invoke(app, [*base, "--shard", "0/2", "--merge"])
    assert isinstance(result.exception, ConfigError)


@pytest.mark.slow
def test_cli_killed_run_resumes_with_workers(dataset, prepared, tmp_path):
    """SIGKILL a 2-worker CLI run mid-way; the rerun completes and equals the clean run."""
    out = tmp_path / "killed"
    args = ["prepare", "--raw", str(dataset["raw"]), "--annotations", str(dataset["csv"]), "--out", str(out)]
    p = _cli(*args, "--workers", "2", "--set", "seed=11", start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "volumes").glob("*.h5"))) < 2:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    done = len(list((out / "volumes").glob("*.h5")))
    assert 2 <= done and not (out / "patches").exists()
    p = _cli(*args, "--set", "seed=11")
    text, _ = p.communicate(timeout=300)
    assert p.returncode == 0, text
    assert "| **Total** |" in text
    pd.testing.assert_frame_equal(_manifest(out), _manifest(prepared[0]))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A tiny dataset from the built-in simulator (with ground-truth sidecars), prepared once."""
    from magphase.config import SimulateConfig
    from magphase.simulate.dataset import SimulatedDatasetPlan, run_simulation

    root = tmp_path_factory.mktemp("sim")
    cfg = SimulateConfig.model_validate(
        {
            "volumes": 6,
            "external_volumes": 0,
            "matrix": [192, 192],
            "n_slices": 5,
            "coils": {4: 1.0},
            "min_volumes_per_cell": 1,
            "class_fractions": {"normal": 0.3, "abnormal": 0.5, "excluded": 0.0, "unlabeled": 0.2},
        }
    )
    run_simulation(root / "raw", SimulatedDatasetPlan.build(cfg, seed=5))
    out = root / "out"
    summary = prep.prepare(
        root / "raw",
        out,
        annotations=root / "raw" / "brain.csv",
        file_list=root / "raw" / "brain_file_list.csv",
        cfg=PrepareConfig(
            abnormal_box_patches=(5, 10), normal_patches=(5, 8), abnormal_volume_normal_patches=(2, 3)
        ),
        seed=0,
        figure=False,
    )
    return root, out, summary


@pytest.mark.slow
def test_simulated_brain_masks_and_lesion_patches(simulated):
    """On simulator output: mask Dice >= 0.9 vs ground truth; box patches show the true lesion."""
    root, out, summary = simulated
    assert summary.brain_mask_dice is not None and summary.brain_mask_dice["mean"] >= 0.9
    m = Store(out / "patches").manifest
    abnormal = m[m["label"] == "abnormal"]
    assert len(abnormal) > 0
    hits, whole = 0, 0
    for _, row in abnormal.iterrows():
        with h5py.File(root / "raw" / "truth" / f"{row['volume']}.h5") as f:
            lesions = np.asarray(f["lesions/masks"])[:, row["slice"]].any(axis=0)
        window = (slice(row["row"], row["row"] + PATCH_SIZE), slice(row["col"], row["col"] + PATCH_SIZE))
        hits += bool(lesions[window].any())
        box = (slice(row["box_row0"], row["box_row1"]), slice(row["box_col0"], row["box_col1"]))
        assert lesions[box].any(), "the box must mark true lesion pixels"
        if row["box_overlap"] >= 1.0:
            whole += 1
            # A box wholly inside the patch: all of the box's lesion pixels are in the patch.
            inside = np.zeros_like(lesions)
            inside[window] = True
            assert not (lesions[box] & ~inside[box]).any()
    assert hits >= 0.9 * len(abnormal) and whole > 0
