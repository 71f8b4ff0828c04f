from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from fuse4seg.cli.main import main
from fuse4seg.data import (
    PreparedStore,
    PrepareOptions,
    assert_patient_level_split,
    discover_cases,
    load_case,
    prepare_dataset,
    write_phantom_dataset,
)
from fuse4seg.data.preprocess import (
    brain_mask,
    centre_crop_or_pad,
    normalise_volume,
    resample_slices,
)
from fuse4seg.errors import InputError

PSHAPE = (32, 28, 16)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    write_phantom_dataset(root, cases=4, shape=PSHAPE, seed=1)
    return root


def test_normalise_volume_hand_values():
    vol = np.zeros((4, 4, 2), np.float32)
    vol[1:3, 1:3, :] = np.arange(1, 9, dtype=np.float32).reshape(2, 2, 2)
    out, (lo, hi) = normalise_volume(vol, vol > 0, (0.0, 100.0))
    assert (lo, hi) == (1.0, 8.0)
    np.testing.assert_allclose(out[1:3, 1:3, :], (vol[1:3, 1:3, :] - 1) / 7)
    assert out[0].max() == 0 and out.dtype == np.float32
    out, (lo, hi) = normalise_volume(vol, vol > 0, (25.0, 75.0))
    assert out.min() == 0 and out.max() == 1 and (out[vol == 0] == 0).all()


def test_resample_block_mean_and_mode():
    img = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    lab = np.array([[0, 0, 1, 2], [0, 3, 2, 1], [2, 2, 0, 0], [2, 0, 0, 3]], np.uint8)[None]
    out, olab = resample_slices(img, lab, 0.5)
    np.testing.assert_allclose(out[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    # blocks: {0,0,0,3} -> 0; {1,2,2,1} tie -> 2 (higher wins); {2,2,2,0} -> 2; {0,0,0,3} -> 0
    np.testing.assert_array_equal(olab[0], [[0, 2], [2, 0]])
    out, olab = resample_slices(np.ones((2, 1, 9, 9), np.float32), lab[:, :3, :3], 1 / 1.5)
    assert out.shape == (2, 1, 6, 6) and olab.shape == (1, 2, 2)


@pytest.mark.parametrize("size, expect", [(4, (1, 1)), (8, (-1, -1)), (6, (0, 0))])
def test_centre_crop_or_pad_offsets(size, expect):
    arr = np.arange(36).reshape(1, 6, 6)
    out, off = centre_crop_or_pad(arr, size)
    assert out.shape == (1, size, size) and off == expect
    for i in range(size):
        for j in range(size):
            si, sj = i + off[0], j + off[1]
            inside = 0 <= si < 6 and 0 <= sj < 6
            assert out[0, i, j] == (arr[0, si, sj] if inside else 0)


def test_prepare_phantom_store_matches_source(phantom_dir, tmp_path):
    res = prepare_dataset(phantom_dir, tmp_path / "prep", PrepareOptions(seed=3), log=None)
    assert res.ok and res.prepared == [f"Phantom_00{i}" for i in range(4)]
    store = PreparedStore(tmp_path / "prep")
    man = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    assert man == store.manifest and man["size"] == 32 and man["modalities"] == ["t1ce", "flair"]
    assert {k: len(v) for k, v in man["splits"].items()} == {"train": 2, "val": 1, "test": 1}
    assert_patient_level_split(man)
    case = discover_cases(phantom_dir)[2]
    lc = load_case(case, ["t1ce", "flair"])
    info = store.case_info(case.case_id)
    z0, z1 = info["z_range"]
    mask = brain_mask([lc.images["t1ce"], lc.images["flair"]])
    assert mask[:, :, z0:z1].any(axis=(0, 1)).all() and not mask[:, :, :z0].any()
    assert info["original_shape"] == list(PSHAPE) and info["et_label"] == 4
    img, lab = store.image(case.case_id), store.label(case.case_id)
    assert img.shape == (z1 - z0, 2, 32, 32) and img.dtype == np.float16
    assert lab.shape == (z1 - z0, 32, 32) and lab.dtype == np.uint8
    oh, ow = info["crop_offset"]
    assert (oh, ow) == (0, -2)  # 28 -> 32: pad 2 on each side of W
    for m, name in enumerate(["t1ce", "flair"]):
        norm, (lo, hi) = normalise_volume(lc.images[name], mask)
        assert info["normalisation"][name] == pytest.approx([lo, hi])
        exp = norm[:, :, z0:z1].transpose(2, 0, 1)
        np.testing.assert_allclose(img[:, m, :, 2:30], exp, atol=1e-3)
        assert img[:, m, :, :2].max() == 0
    np.testing.assert_array_equal(lab[:, :, 2:30], lc.seg[:, :, z0:z1].transpose(2, 0, 1))
    tumour = [d for d in range(lab.shape[0]) if lab[d].any()]
    assert store.tumour_slices(case.case_id) == tumour
    assert info["label_counts"] == np.bincount(lab.ravel(), minlength=4).tolist()
    assert pickle.loads(pickle.dumps(store)).image(case.case_id).shape == img.shape


def test_prepare_scale_and_size(phantom_dir, tmp_path):
    opts = PrepareOptions(modalities=("flair", "t2", "t1"), scale=0.5, size=12)
    res = prepare_dataset(phantom_dir, tmp_path / "p", opts, log=None)
    store = PreparedStore(res.output)
    cid = store.case_ids()[0]
    assert store.modalities == ["flair", "t2", "t1"]
    assert store.image(cid).shape[1:] == (3, 12, 12)
    info = store.case_info(cid)
    assert info["scaled_shape"] == [16, 14]
    oh, ow = info["crop_offset"]
    assert 0 <= oh <= 4 and 0 <= ow <= 2  # crop window inside the 16 x 14 scaled slice
    lc = load_case(discover_cases(phantom_dir / cid)[0], ["t1"])
    z0, z1 = info["z_range"]
    seg = lc.seg[:, :, z0:z1].transpose(2, 0, 1)
    _, pooled = resample_slices(np.zeros((z1 - z0, 1, 32, 28), np.float32), seg, 0.5)
    np.testing.assert_array_equal(store.label(cid), pooled[:, oh : oh + 12, ow : ow + 12])
    assert float(np.asarray(store.image(cid)).max()) <= 1.0


def test_split_deterministic_and_seeded(phantom_dir, tmp_path):
    a = prepare_dataset(phantom_dir, tmp_path / "a", PrepareOptions(seed=0), log=None)
    b = prepare_dataset(phantom_dir, tmp_path / "b", PrepareOptions(seed=0), workers=2, log=None)
    assert a.manifest["splits"] == b.manifest["splits"]
    for ca, cb in zip(a.manifest["cases"], b.manifest["cases"], strict=True):
        assert ca["tumour_slices"] == cb["tumour_slices"]
        np.testing.assert_array_equal(
            np.load(a.output / "cases" / ca["id"] / "image.npy"),
            np.load(b.output / "cases" / cb["id"] / "image.npy"),
        )


def _break_flair(root, case_id):
    f = root / case_id / f"{case_id}_flair.nii.gz"
    f.write_bytes(f.read_bytes()[:200])


def test_cli_bad_case_continues(phantom_dir, tmp_path, capsys):
    import shutil

    src = tmp_path / "in"
    shutil.copytree(phantom_dir, src)
    _break_flair(src, "Phantom_001")
    (src / "Phantom_003" / "Phantom_003_t1ce.nii.gz").unlink()
    out = tmp_path / "prep"
    rc = main(["prepare", "-i", str(src), "-o", str(out), "--no-progress", "--split", "0.5",
               "0.25", "0.25"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 2
    assert "FAILED Phantom_001: " in cap.err and "Phantom_001_flair.nii.gz: cannot read" in cap.err
    assert "FAILED Phantom_003: " in cap.err and "missing modality t1ce" in cap.err
    assert "2 of 4 cases failed" in cap.err and "Traceback" not in cap.err
    store = PreparedStore(out)
    assert store.case_ids() == ["Phantom_000", "Phantom_002"]
    assert sorted(store.manifest["failed"]) == ["Phantom_001", "Phantom_003"]
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["Phantom_000", "Phantom_002"]
    assert not list(out.rglob(".tmp-*"))


def test_cli_errors(phantom_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["prepare", "-i", str(phantom_dir), "-o", str(tmp_path / "afile")]) == 2
    assert "afile: output exists and is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["prepare", "-i", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no BraTS cases found" in err
    assert not (tmp_path / "o").exists()
    assert main(["prepare", "-i", str(phantom_dir), "-o", str(tmp_path / "o"), "--split",
                 "0.5", "0.5", "0.5"]) == 2  # fmt: skip
    assert "fractions" in capsys.readouterr().err
    args = ["prepare", "-i", str(phantom_dir), "-o", str(tmp_path / "s"), "--no-progress"]
    assert main(args) == 0
    assert main(args) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--scale", "0.5"]) == 0
    assert PreparedStore(tmp_path / "s").size == 16


def test_store_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        PreparedStore(tmp_path / "nope")
    with pytest.raises(InputError, match="not a prepared store"):
        PreparedStore(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(InputError, match="invalid JSON"):
        PreparedStore(tmp_path)


def test_prepare_real_cases(brats_dir, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("BraTS-GLI-00000-000", "Brats18_2013_2_1"):
        (src / name).symlink_to(brats_dir / name, target_is_directory=True)
    out = tmp_path / "prep"
    assert main(["prepare", "-i", str(src), "-o", str(out), "--scale", "0.5", "--no-progress"]) == 0
    assert "prepared 2 cases" in capsys.readouterr().out
    store = PreparedStore(out)
    assert store.size == 120
    for cid, et in (("BraTS-GLI-00000-000", 3), ("Brats18_2013_2_1", 4)):
        info = store.case_info(cid)
        img = np.asarray(store.image(cid), dtype=np.float32)
        lab = np.asarray(store.label(cid))
        assert info["et_label"] == et and info["original_shape"] == [240, 240, 155]
        assert img.shape == (info["num_slices"], 2, 120, 120) and 0 <= img.min() <= img.max() <= 1
        assert set(np.unique(lab)) == {0, 1, 2, 3}
        assert info["tumour_slices"] and info["z_range"][1] - info["z_range"][0] > 100


def test_normalise_for_model_matches_prepare(phantom_dir):
    from fuse4seg.data import normalise_for_model

    lc = load_case(discover_cases(phantom_dir / "Phantom_000")[0], ["t1ce", "flair"])
    mask = brain_mask(list(lc.images.values()))
    for vol in lc.images.values():
        ref, _ = normalise_volume(vol, mask)
        np.testing.assert_array_equal(normalise_for_model(vol, {"percentiles": [0.5, 99.5]}), ref)
        np.testing.assert_array_equal(normalise_for_model(vol.astype(np.int16)), ref)
