from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest
from _data_synth import SHAPE, overwrite, tiny_volumes, write_case

from fuse4seg.data import (
    discover_cases,
    from_canonical_labels,
    load_case,
    read_nifti,
    save_segmentation,
    to_canonical_labels,
)
from fuse4seg.errors import InputError


def _case(tmp_path, **kw):
    folder = write_case(tmp_path, **kw)
    return discover_cases(folder)[0], folder


def test_load_tiny_case_values(tmp_path):
    case, _ = _case(tmp_path)
    images, seg = tiny_volumes()
    lc = load_case(case)
    assert list(lc.images) == ["t1", "t1ce", "t2", "flair"]
    for m, vol in lc.images.items():
        assert vol.dtype == np.float32 and vol.shape == SHAPE
        np.testing.assert_array_equal(vol, images[m].astype(np.float32))
    np.testing.assert_array_equal(lc.seg, to_canonical_labels(seg, 4))
    assert lc.seg.dtype == np.uint8 and set(np.unique(lc.seg)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(lc.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(lc.spacing, [1, 1, 1])
    assert lc.shape == SHAPE


def test_subset_of_modalities_and_no_seg(tmp_path):
    case, _ = _case(tmp_path, naming="brats2023", skip=("t2", "seg"), ext=".nii")
    lc = load_case(case, ["flair", "t1ce"])
    assert list(lc.images) == ["flair", "t1ce"] and lc.seg is None
    with pytest.raises(InputError, match=r"missing modality t2 \(expected Case_001-t2w.nii.gz\)"):
        load_case(case, ["t1ce", "t2"])
    with pytest.raises(ValueError, match="unknown modality"):
        load_case(case, ["pd"])


def _break(folder, kind):
    """Make one file of a tiny case bad; returns (file, expected message regex)."""
    f = {m: folder / f"Case_001_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair", "seg")}
    images, seg = tiny_volumes()
    if kind == "missing":
        f["t2"].unlink()
        return folder, "missing modality t2"
    if kind == "shape":
        overwrite(f["flair"], np.ones((20, 18, 9), np.int16))
        return f["flair"], r"shape \(20, 18, 9\) differs from Case_001_t1.nii.gz"
    if kind == "affine":
        aff = np.diag([-1.0, -1.0, 1.0, 1.0])
        aff[0, 3] = 0.01
        overwrite(f["t1ce"], images["t1ce"], aff)
        return f["t1ce"], "affine differs .* by up to 0.01 .tolerance 0.001."
    if kind == "4d":
        overwrite(f["t1ce"], np.ones(SHAPE + (2,), np.int16))
        return f["t1ce"], r"expected a 3D volume, got shape \(20, 18, 10, 2\) \(4D\)"
    if kind == "2d":
        overwrite(f["t2"], np.ones((20, 18), np.int16))
        return f["t2"], r"expected a 3D volume.*\(2D\)"
    if kind == "nan":
        vol = images["flair"].astype(np.float32)
        vol[3, 3, 3] = np.nan
        vol[4, 4, 4] = np.inf
        overwrite(f["flair"], vol)
        return f["flair"], "2 NaN/Inf voxels"
    if kind == "zero":
        overwrite(f["t1"], np.zeros(SHAPE, np.int16))
        return f["t1"], "all-zero volume"
    if kind == "labels":
        bad = seg.copy()
        bad[0, 0, 0] = 3  # 3 is not a BraTS 2021 label
        overwrite(f["seg"], bad)
        return f["seg"], r"label values \[3\] not in.*allowed brats2021 labels: \[0, 1, 2, 4\]"
    if kind == "float_labels":
        overwrite(f["seg"], seg.astype(np.float32) + 0.5)
        return f["seg"], "non-integer"
    if kind == "corrupt_gzip":
        data = f["t2"].read_bytes()
        f["t2"].write_bytes(data[: len(data) // 2])
        return f["t2"], "cannot read NIfTI"
    if kind == "not_gzip":
        f["t2"].write_bytes(b"this is not a gzip file at all" * 20)
        return f["t2"], "cannot read NIfTI"
    raise AssertionError(kind)


BAD_KINDS = [
    "missing",
    "shape",
    "affine",
    "4d",
    "2d",
    "nan",
    "zero",
    "labels",
    "float_labels",
    "corrupt_gzip",
    "not_gzip",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_names_file_and_problem(tmp_path, kind):
    case, folder = _case(tmp_path)
    path, pattern = _break(folder, kind)
    with pytest.raises(InputError, match=pattern) as err:
        load_case(discover_cases(folder)[0])
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg


def test_affine_within_tolerance_is_accepted(tmp_path):
    case, folder = _case(tmp_path)
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    aff[1, 3] = 5e-4
    overwrite(folder / "Case_001_t2.nii.gz", tiny_volumes()[0]["t2"], aff)
    load_case(case)


def test_seg_of_int_and_float_dtypes(tmp_path):
    case, folder = _case(tmp_path, naming="brats2023")
    _, seg = tiny_volumes(et_label=3)
    for dtype in (np.int16, np.float32, np.float64, np.uint16):
        overwrite(folder / "Case_001-seg.nii.gz", seg.astype(dtype))
        np.testing.assert_array_equal(load_case(case, ["t1ce"]).seg, seg)


def test_save_segmentation_round_trip(tmp_path):
    case, _ = _case(tmp_path)
    lc = load_case(case, ["t1ce"])
    out = save_segmentation(lc.seg, tmp_path / "out" / "pred.nii.gz", lc.affine, 4, lc.header)
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), tiny_volumes()[1])
    assert [p.name for p in out.parent.iterdir()] == ["pred.nii.gz"]  # no temporary left


def _seg_counts(arr):
    """{label: voxel count} of an integer-valued label array (bincount: fast)."""
    assert arr.min() >= 0 and arr.max() <= 4
    ints = arr.astype(np.uint8)
    assert np.array_equal(ints, arr)
    counts = np.bincount(ints.ravel())
    return {int(k): int(c) for k, c in enumerate(counts) if c}


def test_real_label_round_trip_all_cases(brats_dir, tmp_path):
    """Labels and voxel counts survive load -> canonical -> write-back for all 14 cases."""
    for case in discover_cases(brats_dir):
        raw, img = read_nifti(case.seg, as_float=False)
        canon = to_canonical_labels(raw, case.et_label)
        out = save_segmentation(
            canon, tmp_path / f"{case.case_id}.nii.gz", img.affine, case.et_label
        )
        back = np.asarray(nib.load(str(out)).dataobj)
        np.testing.assert_array_equal(back, raw.astype(np.uint8))
        counts = _seg_counts(raw)
        assert _seg_counts(back) == counts
        assert set(counts) <= ({0, 1, 2, 4} if case.naming == "brats2021" else {0, 1, 2, 3})
        canon_counts = _seg_counts(canon)
        assert canon_counts.get(3, 0) == counts.get(case.et_label, 0)
        out.unlink()


def test_real_2023_case_full_load(brats_dir, tmp_path):
    case = next(c for c in discover_cases(brats_dir) if c.naming == "brats2023")
    assert nib.load(str(case.seg)).get_data_dtype() == np.float32
    lc = load_case(case, ["t1ce", "flair"])
    raw = np.asarray(nib.load(str(case.seg)).dataobj)
    assert lc.shape == (240, 240, 155) and lc.seg.shape == (240, 240, 155)
    assert _seg_counts(lc.seg) == _seg_counts(raw)  # ET = 3 stays 3
    out = save_segmentation(lc.seg, tmp_path / "seg.nii.gz", lc.affine, case.et_label, lc.header)
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(back.dataobj), raw.astype(np.uint8))
    np.testing.assert_allclose(back.affine, lc.affine)
    np.testing.assert_array_equal(from_canonical_labels(lc.seg, 3), raw)


def test_real_broken_copy_truncated_gzip(brats_dir, tmp_path):
    case = discover_cases(brats_dir / "Brats18_2013_2_1")[0]
    dst = tmp_path / case.case_id
    dst.mkdir()
    for m in ("t1ce", "flair"):
        shutil.copy(case.files[m], dst / case.files[m].name)
    shutil.copy(case.seg, dst / case.seg.name)
    flair = dst / case.files["flair"].name
    with open(flair, "r+b") as fh:
        fh.truncate(flair.stat().st_size // 3)
    broken = discover_cases(dst)[0]
    with pytest.raises(InputError, match="corrupt or truncated") as err:
        load_case(broken, ["t1ce", "flair"])
    assert str(err.value).startswith(str(flair))
    with pytest.raises(InputError, match="missing modality t2"):
        load_case(broken, ["t1ce", "t2"])
    assert gzip  # module used for documentation of the error type
