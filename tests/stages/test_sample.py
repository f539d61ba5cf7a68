"""The sample stage's store writer: layout, sharding under torchrun, resume from parts (tiny networks)."""

import os
import socket

import numpy as np
import pytest
import torch
from torch import nn

from magphase.data.store import MANIFEST_COLUMNS, Store
from magphase.generative.sampling import SampleGroup, sample_latents
from magphase.stages.sample import generate_synthetic_store


class StandInDecoder(nn.Module):
    """``decode(z, seq)``: 2 x 8 x 8 latents -> 2 x 96 x 96 patches (nearest upsampling + sequence offset)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def decode(self, z, seq):
        up = torch.nn.functional.interpolate(z, size=(96, 96), mode="nearest")
        return self.scale * up + seq.float()[:, None, None, None]


def _sample(model, stage=1, label=None, n=5, **kw):
    args = dict(stage=stage, group=SampleGroup("AXT1", label, n), guidance=2.0, steps=3, seed=7)
    args.update(kw)
    return sample_latents(model, **args)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sharded_worker(rank, world, port, tmp):
    os.environ.update(
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from magphase.models.unet import VelocityUNet
    from magphase.training.distributed import init_distributed, shutdown_distributed

    info = init_distributed("cpu")
    from flow_fixtures import TINY_UNET

    model = VelocityUNet(**TINY_UNET)
    model.load_state_dict(torch.load(f"{tmp}/w.pt", weights_only=True))
    groups = [SampleGroup("AXT1", None, 5), SampleGroup("AXT2", None, 3)]
    generate_synthetic_store(
        model.eval(), f"{tmp}/sharded", groups, stage=1, guidance=1.5, steps=2, seed=1, dist=info
    )
    shutdown_distributed()


class _Interrupt(RuntimeError):
    pass


def test_synthetic_store_layout(tmp_path, make_unet):
    model = make_unet(class_conditioning=True)
    groups = [
        SampleGroup("AXFLAIR", "normal", 3),
        SampleGroup("AXT1", "abnormal", 2),
        SampleGroup("AXT2", "unknown", 1),
    ]
    path = generate_synthetic_store(
        model,
        tmp_path / "syn",
        groups,
        stage=2,
        guidance=2.0,
        steps=2,
        seed=3,
        split="val",
        batch_size=2,
        autoencoder=StandInDecoder(),
        provenance={"flow_weights": "w.safetensors"},
    )
    store = Store(path)
    assert store.arrays == {"z": (2, 8, 8), "patches": (2, 96, 96)} and len(store) == 6
    m = store.manifest
    assert tuple(m.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert list(m["sequence"]) == ["AXFLAIR"] * 3 + ["AXT1"] * 2 + ["AXT2"]
    assert list(m["label"]) == ["normal"] * 3 + ["abnormal"] * 2 + ["unlabeled"]
    assert (m["synthetic"] == 1).all() and (m["split"] == "val").all() and m["patch_id"].is_unique
    assert store.meta["kind"] == "synthetic" and store.meta["flow_weights"] == "w.safetensors"
    assert store.meta["amp"] == "none"
    z = store.read("z", slice(None))
    ref = _sample(model, stage=2, label="normal", n=3, seed=3, steps=2, group=groups[0])
    np.testing.assert_allclose(z[:3], ref.numpy(), rtol=1e-5, atol=1e-5)
    # Patches are the decoder's output for the stored latents and each group's sequence.
    patches = store.read("patches", slice(None))
    np.testing.assert_allclose(patches[3, 0, :12, :12], z[3, 0, 0, 0] + 1.0, rtol=1e-6)
    with pytest.raises(FileExistsError):
        generate_synthetic_store(model, path, groups, stage=2, guidance=2.0, steps=2)


@pytest.mark.slow
def test_sharded_sampling_under_two_ranks_equals_single_process(tmp_path, make_unet):
    model = make_unet()
    groups = [SampleGroup("AXT1", None, 5), SampleGroup("AXT2", None, 3)]
    single = generate_synthetic_store(
        model, tmp_path / "single", groups, stage=1, guidance=1.5, steps=2, seed=1
    )
    torch.save(model.state_dict(), tmp_path / "w.pt")
    port = _free_port()
    ctx = torch.multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_sharded_worker, args=(r, 2, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    a, b = Store(single), Store(tmp_path / "sharded")
    assert list(a.manifest["patch_id"]) == list(b.manifest["patch_id"])
    np.testing.assert_allclose(a.read("z", slice(None)), b.read("z", slice(None)), rtol=1e-5, atol=1e-5)
    assert not list(tmp_path.glob("sharded.rank*"))


def test_canonical_model_gets_a_seeded_random_global_phase_after_decoding(tmp_path, make_unet):
    from magphase.generative.sampling import decode_samples, restored_phases
    from magphase.mri.complex import rotate_phase

    model = make_unet(class_conditioning=True)
    groups = [SampleGroup("AXT1", "normal", 3), SampleGroup("AXT1", "abnormal", 3)]
    kw = dict(stage=2, guidance=2.0, steps=2, seed=5, autoencoder=StandInDecoder())
    plain = Store(generate_synthetic_store(model, tmp_path / "plain", groups, **kw))
    assert "global_phase" not in plain.manifest.columns and plain.meta["canonical_phase"] is False
    model.canonical_phase = True
    canon = Store(generate_synthetic_store(model, tmp_path / "canon", groups, batch_size=2, **kw))
    phi = canon.manifest["global_phase"].to_numpy()
    assert canon.meta["canonical_phase"] is True and np.all(np.abs(phi) <= np.pi)
    # Latents stay canonical; patches are the plain decoded patches rotated by the recorded angle.
    np.testing.assert_allclose(canon.read("z", slice(None)), plain.read("z", slice(None)), atol=1e-5)
    want = rotate_phase(plain.read("patches", slice(None)), phi)
    np.testing.assert_allclose(canon.read("patches", slice(None)), want, atol=1e-5)
    # A normal/abnormal pair (same index) shares its angle; the angles do not depend on batching.
    np.testing.assert_array_equal(phi[:3], phi[3:])
    np.testing.assert_array_equal(restored_phases(groups[0], 2, 5, 1, 3), phi[1:3])
    assert len(set(np.round(restored_phases(groups[0], 2, 5, 0, 200), 6))) == 200
    z = torch.from_numpy(canon.read("z", slice(0, 3)))
    got = decode_samples(model, StandInDecoder(), z, groups[0], stage=2, seed=5)
    np.testing.assert_allclose(got.numpy(), canon.read("patches", slice(0, 3)), atol=1e-5)


def test_killed_sampling_resumes_from_its_finished_parts(tmp_path, make_unet):
    model = make_unet()
    groups = [SampleGroup("AXT1", None, 5), SampleGroup("AXT2", None, 3)]
    kw = dict(stage=1, guidance=1.5, steps=2, seed=1, batch_size=2, autoencoder=StandInDecoder())
    ref = generate_synthetic_store(model, tmp_path / "ref", groups, **kw)
    out = tmp_path / "syn"
    calls = []
    forward = model.forward

    def failing_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3 * 2:  # 3 units of 2 batched calls (K = 2 Heun -> 3 calls, w = 1.5: one each)
            raise _Interrupt("killed")
        return forward(*args, **kwargs)

    model.forward = failing_forward
    with pytest.raises(_Interrupt):
        generate_synthetic_store(model, out, groups, **kw)
    model.forward = forward
    assert not out.exists()
    parts = sorted(p.name for p in (tmp_path / "syn.parts").glob("part-*"))
    assert parts == ["part-000000", "part-000001"]  # units: AXT1 0-1, 2-3, 4; AXT2 0-1, 2
    done = []
    generate_synthetic_store(model, out, groups, **kw, progress=done.append)
    assert sum(done) == 8  # the finished samples are reported too
    assert not (tmp_path / "syn.parts").exists()
    a, b = Store(ref), Store(out)
    assert list(a.manifest["patch_id"]) == list(b.manifest["patch_id"])
    np.testing.assert_array_equal(a.read("z", slice(None)), b.read("z", slice(None)))
    np.testing.assert_array_equal(a.read("patches", slice(None)), b.read("patches", slice(None)))
    assert "merged_from" not in b.meta and b.meta["kind"] == "synthetic"


def test_parts_of_another_recipe_are_discarded(tmp_path, make_unet):
    model = make_unet()
    groups = [SampleGroup("AXT1", None, 3)]
    out = tmp_path / "syn"
    parts = tmp_path / "syn.parts"
    parts.mkdir()
    (parts / "recipe.json").write_text('{"meta": {"seed": 99}}')
    (parts / "part-000000").mkdir()  # e.g. a unit from another seed: must not be merged
    generate_synthetic_store(model, out, groups, stage=1, guidance=1.0, steps=2, seed=1, batch_size=2)
    ref = _sample(model, stage=1, n=3, seed=1, steps=2, guidance=1.0)
    np.testing.assert_allclose(Store(out).read("z", slice(None)), ref.numpy(), rtol=1e-5, atol=1e-6)
    assert not parts.exists()


def test_empty_groups_give_an_empty_store(tmp_path, make_unet):
    out = generate_synthetic_store(
        make_unet(), tmp_path / "e", [SampleGroup("AXT1", None, 0)], stage=1, guidance=1.0, steps=2
    )
    assert len(Store(out)) == 0
