from __future__ import annotations

import numpy as np
import pytest

from fuse4seg.cli.main import main
from fuse4seg.data import (
    TISSUES,
    discover_cases,
    generate_phantom_case,
    load_case,
    write_phantom_dataset,
)

SHAPE = (48, 48, 24)
T = {name: k for k, name in enumerate(TISSUES)}


@pytest.fixture(scope="module")
def cases():
    return [generate_phantom_case(SHAPE, np.random.default_rng(i), True) for i in range(6)]


def test_shapes_dtypes_labels_and_background(cases):
    for images, seg, tissue in cases:
        assert set(images) == {"t1", "t1ce", "t2", "flair"}
        assert seg.shape == SHAPE and seg.dtype == np.uint8
        assert set(np.unique(seg)) <= {0, 1, 2, 3} and (seg > 0).any()
        brain = tissue > 0
        for vol in images.values():
            assert vol.shape == SHAPE and vol.dtype == np.float32
            assert np.all(vol[~brain] == 0) and np.all(vol[brain] >= 1)
            np.testing.assert_array_equal(vol, np.round(vol))
        # seg is consistent with the tissue map
        for label, name in ((1, "NCR"), (2, "ED"), (3, "ET")):
            np.testing.assert_array_equal(seg == label, tissue == T[name])
        assert ((seg > 0) <= brain).all()


def test_deterministic_per_rng():
    a, sa = generate_phantom_case(SHAPE, np.random.default_rng(7))
    b, sb = generate_phantom_case(SHAPE, np.random.default_rng(7))
    c, sc = generate_phantom_case(SHAPE, np.random.default_rng(8))
    np.testing.assert_array_equal(sa, sb)
    for m in a:
        np.testing.assert_array_equal(a[m], b[m])
    assert not np.array_equal(a["flair"], c["flair"])


def test_variety_over_cases(cases):
    has_ncr = [(seg == 1).any() for _, seg, _ in cases]
    wt = [(seg > 0).sum() for _, seg, _ in cases]
    assert any(has_ncr)
    assert max(wt) > 2 * min(wt)  # varied tumour sizes
    scales = [images["t1"].max() for images, _, _ in cases]
    assert max(scales) > 1.3 * min(scales)  # per-case intensity scaling


def _rel(images, tissue, mod, a, b):
    """Mean intensity of tissue a relative to tissue b in modality mod."""
    vol = images[mod]
    return vol[tissue == T[a]].mean() / vol[tissue == T[b]].mean()


def test_contrast_relations(cases):
    for images, _, tissue in cases:
        # T1: WM > GM > CSF; T2: CSF bright; FLAIR: CSF suppressed, ED very bright
        assert _rel(images, tissue, "t1", "WM", "GM") > 1.15
        assert _rel(images, tissue, "t1", "GM", "CSF") > 1.5
        assert _rel(images, tissue, "t2", "CSF", "WM") > 1.3
        assert _rel(images, tissue, "flair", "CSF", "WM") < 0.65
        assert _rel(images, tissue, "flair", "ED", "WM") > 1.6
        # ED is (nearly) invisible in T1ce but obvious in FLAIR
        assert abs(_rel(images, tissue, "t1ce", "ED", "WM") - 1.0) < 0.2
        # ET strongly enhancing in T1ce
        if (tissue == T["ET"]).sum() > 100:
            assert _rel(images, tissue, "t1ce", "ET", "WM") > 1.25
        if (tissue == T["NCR"]).sum() > 50:
            # NCR dark in T1ce, but ET/NCR hard to separate in FLAIR
            assert _rel(images, tissue, "t1ce", "NCR", "ET") < 0.65
            assert abs(_rel(images, tissue, "flair", "NCR", "ET") - 1.0) < 0.2


def test_plain_average_confuses_et_and_ed(cases):
    """(T1ce + FLAIR)/2 of normalised images maps ET and ED to nearly the same value."""
    diffs_avg, diffs_t1ce = [], []
    for images, _, tissue in cases:
        if (tissue == T["ET"]).sum() < 100:
            continue
        t1ce = images["t1ce"] / images["t1ce"][tissue == T["WM"]].mean()
        flair = images["flair"] / images["flair"][tissue == T["WM"]].mean()
        avg = (t1ce / t1ce.max() + flair / flair.max()) / 2
        et, ed = tissue == T["ET"], tissue == T["ED"]
        diffs_avg.append(abs(avg[et].mean() - avg[ed].mean()) / avg[ed].mean())
        diffs_t1ce.append(abs(t1ce[et].mean() - t1ce[ed].mean()) / t1ce[ed].mean())
    assert diffs_avg
    assert np.mean(diffs_avg) < 0.5 * np.mean(diffs_t1ce)


def test_bad_shape_rejected():
    with pytest.raises(ValueError, match="sides >= 16"):
        generate_phantom_case((8, 32, 32))


def test_write_dataset_same_code_path_as_real_data(tmp_path):
    folders = write_phantom_dataset(tmp_path / "ph", cases=2, shape=(32, 32, 16), seed=5)
    assert [f.name for f in folders] == ["Phantom_000", "Phantom_001"]
    cases = discover_cases(tmp_path / "ph")
    assert [c.naming for c in cases] == ["brats2021", "brats2021"]
    lc = load_case(cases[1])
    ref_images, ref_seg = generate_phantom_case((32, 32, 16), np.random.default_rng(6))
    np.testing.assert_array_equal(lc.seg, ref_seg)
    np.testing.assert_array_equal(lc.images["flair"], ref_images["flair"])
    np.testing.assert_array_equal(np.abs(np.diag(lc.affine)), [1, 1, 1, 1])
    import nibabel as nib

    raw = np.asarray(nib.load(str(cases[1].seg)).dataobj)
    assert set(np.unique(raw)) <= {0, 1, 2, 4} and (raw == 4).sum() == (ref_seg == 3).sum()


def test_cli_phantom(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["phantom", "-o", str(out), "--cases", "2", "--shape", "32", "32", "16",
                 "--no-progress"]) == 0  # fmt: skip
    assert "wrote 2 phantom cases" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "Phantom_001").iterdir()) == [
        f"Phantom_001_{m}.nii.gz" for m in ("flair", "seg", "t1", "t1ce", "t2")
    ]
    assert not list(out.rglob(".tmp-*"))
    (tmp_path / "afile").write_text("x")
    assert main(["phantom", "-o", str(tmp_path / "afile"), "--cases", "1"]) == 2
    assert "afile: output exists and is not a folder" in capsys.readouterr().err
    assert main(["phantom", "-o", str(out), "--cases", "0"]) == 2
    assert "--cases must be >= 1" in capsys.readouterr().err
