"""BraTS-Fuse export: combinations, slice selection, colour labels, folder contents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fuse4seg.benchmark.export_brats_fuse import (
    LABEL_COLOURS,
    SliceFuser,
    combinations,
    export_brats_fuse,
    label_to_rgb,
    select_slices,
)
from fuse4seg.benchmark.fusers import rule_slice_fuser
from fuse4seg.cli.main import main
from fuse4seg.data import discover_cases
from fuse4seg.data.phantom import write_phantom_dataset
from fuse4seg.errors import ConfigError, InputError

MODS = ("t1", "t1ce", "t2", "flair")


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom_bf")
    write_phantom_dataset(root, cases=1, shape=(24, 24, 16), seed=5)
    return root


def _max_norm(v: np.ndarray) -> np.ndarray:
    return (v / max(float(v.max()), 1e-6)).astype(np.float32)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_combinations_counts_and_order():
    combos = combinations(MODS)
    assert len(combos) == 6 + 4 + 1
    assert combos[0] == ("t1", "t1ce") and combos[-1] == MODS
    assert combinations(("t1ce", "flair"), (2,)) == [("t1ce", "flair")]
    rule = rule_slice_fuser("max")
    assert len(rule.combinations(MODS, (2, 3, 4))) == 11
    model_like = SliceFuser("net", rule.fuse, modalities=("t1ce", "flair"))
    assert model_like.combinations(MODS, (2, 3, 4)) == [("t1ce", "flair")]
    assert model_like.combinations(("t1", "t2"), (2,)) == []
    with pytest.raises(ConfigError):
        rule_slice_fuser("median")


def test_label_colours_and_slice_selection():
    lab = np.array([[0, 1], [2, 3]])
    rgb = label_to_rgb(lab)
    np.testing.assert_array_equal(rgb.reshape(4, 3), LABEL_COLOURS)
    with pytest.raises(ValueError):
        label_to_rgb(np.array([4]))
    images = np.zeros((2, 4, 4, 6), np.float32)
    images[0, :, :, 1:5] = 1.0
    seg = np.zeros((4, 4, 6), np.uint8)
    seg[1, 1, 2:4] = 2
    assert select_slices(images, seg, "all") == [0, 1, 2, 3, 4, 5]
    assert select_slices(images, seg, "brain") == [1, 2, 3, 4]
    assert select_slices(images, seg, "tumour") == [2, 3]
    assert select_slices(images, None, "tumour") == [1, 2, 3, 4]
    assert select_slices(images, seg, "brain", step=3) == [1, 4]
    with pytest.raises(ConfigError):
        select_slices(images, seg, "every")


def test_export_rules_all_combinations(phantom_dir, tmp_path):
    out = tmp_path / "bf"
    res = export_brats_fuse(
        phantom_dir,
        out,
        [rule_slice_fuser("average")],
        _max_norm,
        slices="tumour",
        step=4,
        log=None,
    )
    (cid,) = res.cases
    info = json.loads((out / cid / "case.json").read_text())
    zs = info["slices"]
    assert zs and info["has_seg"]
    assert sorted(info["fused"]["average"]) == sorted("+".join(c) for c in combinations(MODS))
    for sub in (*MODS, "seg", "label"):
        assert sorted(p.name for p in (out / cid / sub).iterdir()) == [
            f"{cid}_z{z:03d}.png" for z in zs
        ]
    fused_dirs = sorted(p.name for p in (out / cid / "fused" / "average").iterdir())
    assert len(fused_dirs) == 11
    n_png = len(list((out / cid).rglob("*.png")))
    assert n_png == res.cases[cid] == len(zs) * (4 + 2 + 11)
    # the fused average of t1ce+flair equals the mean of the two modality PNGs (+-1 level)
    z = zs[0]
    a = _png(out / cid / "t1ce" / f"{cid}_z{z:03d}.png").astype(float)
    b = _png(out / cid / "flair" / f"{cid}_z{z:03d}.png").astype(float)
    f = _png(out / cid / "fused" / "average" / "t1ce+flair" / f"{cid}_z{z:03d}.png").astype(float)
    assert np.abs(f - (a + b) / 2).max() <= 1.0
    seg = _png(out / cid / "seg" / f"{cid}_z{z:03d}.png")
    lab = _png(out / cid / "label" / f"{cid}_z{z:03d}.png")
    assert seg.shape == (*lab.shape, 3) and set(np.unique(lab)) <= {0, 1, 2, 3}
    assert lab.max() > 0  # a tumour slice
    for k in np.unique(lab):  # every label drawn in its colour
        expected = np.rint(LABEL_COLOURS[k] * 255)
        np.testing.assert_array_equal(seg[lab == k], np.broadcast_to(expected, seg[lab == k].shape))
    assert json.loads((out / "brats_fuse.json").read_text())["cases"] == res.cases


def test_model_fuser_must_match_modalities(phantom_dir, tmp_path):
    only = SliceFuser("net", rule_slice_fuser("average").fuse, modalities=("t1ce", "flair"))
    with pytest.raises(InputError, match="needs modalities"):
        export_brats_fuse(phantom_dir, tmp_path / "x", [only], _max_norm, ["t1", "t2"], log=None)


def test_cli_brats_fuse_needs_a_fuser(phantom_dir, tmp_path, capsys):
    code = main(["export", "brats-fuse", "-i", str(phantom_dir), "-o", str(tmp_path / "o")])
    assert code == 2 and "--rule" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_case_brats_fuse_folder(brats_dir, tmp_path):
    case = next(c for c in discover_cases(brats_dir) if c.case_id == "BraTS2021_00006")
    out = tmp_path / "bf_real"
    code = main(
        [
            "export",
            "brats-fuse",
            "-i",
            str(case.folder),
            "-o",
            str(out),
            "--rule",
            "max",
            "--slices",
            "tumour",
            "--step",
            "25",
        ]
    )
    assert code == 0
    folder = out / case.case_id
    info = json.loads((folder / "case.json").read_text())
    zs = info["slices"]
    assert 1 <= len(zs) <= 4 and info["modalities"] == list(MODS)
    expected = {f"{case.case_id}_z{z:03d}.png" for z in zs}
    for sub in (*MODS, "seg", "label"):
        assert {p.name for p in (folder / sub).iterdir()} == expected
    combos = {p.name for p in (folder / "fused" / "max").iterdir()}
    assert combos == {"+".join(c) for c in combinations(MODS)}
    for combo in combos:
        assert {p.name for p in (folder / "fused" / "max" / combo).iterdir()} == expected
    img = _png(folder / "fused" / "max" / "t1ce+flair" / f"{case.case_id}_z{zs[0]:03d}.png")
    assert img.shape == (240, 240) and img.dtype == np.uint8 and img.max() > 200
    t1ce = _png(folder / "t1ce" / f"{case.case_id}_z{zs[0]:03d}.png").astype(int)
    flair = _png(folder / "flair" / f"{case.case_id}_z{zs[0]:03d}.png").astype(int)
    assert np.abs(img.astype(int) - np.maximum(t1ce, flair)).max() <= 1
    lab = _png(folder / "label" / f"{case.case_id}_z{zs[0]:03d}.png")
    assert set(np.unique(lab)) <= {0, 1, 2, 3} and (lab > 0).any()


def test_cli_brats_fuse_from_store_with_model_and_rule(phantom_dir, tmp_path):
    """A model contributes only its own combination; a rule every combination of the store."""
    import torch

    from fuse4seg.data import PrepareOptions, prepare_dataset
    from fuse4seg.models import create_fusion_net, create_seg_net
    from fuse4seg.models.model_file import FusionSegModel, save_model_file

    opts = PrepareOptions(modalities=("t1", "t1ce", "flair"), split=(0.0, 0.0, 1.0))
    assert prepare_dataset(phantom_dir, tmp_path / "prep", opts, log=None).ok
    torch.manual_seed(0)
    model = FusionSegModel(
        "fuse4seg",
        ["t1ce", "flair"],
        create_seg_net("tiny", 1),
        fusion_net=create_fusion_net("tiny", 2),
        fusion_preset="tiny",
        seg_preset="tiny",
    )
    save_model_file(model, tmp_path / "model.pt")
    out = tmp_path / "bf"
    args = [
        "export",
        "brats-fuse",
        "-i",
        str(tmp_path / "prep"),
        "-o",
        str(out),
        "-m",
        str(tmp_path / "model.pt"),
        "--rule",
        "pca",
        "--step",
        "5",
    ]
    assert main(args) == 0
    info = json.loads((out / "brats_fuse.json").read_text())
    assert info["combinations"]["fuse4seg"] == ["t1ce+flair"]
    assert info["combinations"]["pca"] == ["t1+t1ce", "t1+flair", "t1ce+flair", "t1+t1ce+flair"]
    (cid,) = info["cases"]
    assert sorted(p.name for p in (out / cid).iterdir()) == sorted(
        ["t1", "t1ce", "flair", "seg", "label", "fused", "case.json"]
    )
    zs = json.loads((out / cid / "case.json").read_text())["slices"]
    fused = sorted((out / cid / "fused" / "fuse4seg" / "t1ce+flair").iterdir())
    assert [p.name for p in fused] == [f"{cid}_z{z:03d}.png" for z in zs]
