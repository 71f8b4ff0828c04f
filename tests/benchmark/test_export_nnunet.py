"""nnU-Net v2 raw export: folder layout, file naming, dataset.json keys, label conventions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fuse4seg.benchmark.export_nnunet import (
    build_dataset_json,
    canonical_to_nnunet_labels,
    check_dataset_folder,
    export_nnunet,
    nnunet_to_canonical_labels,
)
from fuse4seg.cli.main import main
from fuse4seg.data import discover_cases, load_case
from fuse4seg.data.phantom import write_phantom_dataset
from fuse4seg.errors import ConfigError, InputError

SHAPE = (24, 24, 16)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    write_phantom_dataset(root, cases=2, shape=SHAPE, seed=3)
    return root


def test_label_remap_round_trip_and_values():
    seg = np.array([0, 1, 2, 3], dtype=np.uint8)
    # nnU-Net's BraTS convention: ED -> 1, NCR -> 2, ET -> 3
    np.testing.assert_array_equal(canonical_to_nnunet_labels(seg), [0, 2, 1, 3])
    np.testing.assert_array_equal(nnunet_to_canonical_labels(canonical_to_nnunet_labels(seg)), seg)
    with pytest.raises(ValueError):
        canonical_to_nnunet_labels(np.array([4]))


def test_dataset_json_regions_and_labels():
    d = build_dataset_json(["t1ce", "flair"], 7, "regions")
    assert d["channel_names"] == {"0": "t1ce", "1": "flair"}
    assert d["labels"] == {
        "background": 0,
        "whole tumor": [1, 2, 3],
        "tumor core": [2, 3],
        "enhancing tumor": [3],
    }
    assert d["regions_class_order"] == [1, 2, 3]
    assert d["numTraining"] == 7 and d["file_ending"] == ".nii.gz"
    plain = build_dataset_json(["fused"], 2, "labels")
    assert plain["labels"] == {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
    assert "regions_class_order" not in plain
    with pytest.raises(ConfigError):
        build_dataset_json(["a"], 1, "bogus")


@pytest.mark.parametrize("name", ["Dataset5_X", "BraTS", "Dataset501-Name", "Dataset501_"])
def test_bad_dataset_folder_names(tmp_path, name):
    with pytest.raises(InputError, match="DatasetXXX_Name"):
        check_dataset_folder(tmp_path / name)
    assert check_dataset_folder(tmp_path / "Dataset042_Brats_Fused") == (42, "Brats_Fused")


def test_stacked_export_from_brats_folder(phantom_dir, tmp_path):
    out = tmp_path / "nnUNet_raw" / "Dataset501_Phantom"
    res = export_nnunet(phantom_dir, out, modalities=["t1ce", "flair"], log=None)
    assert sorted(res.training) == ["Phantom_000", "Phantom_001"]
    names = sorted(p.name for p in (out / "imagesTr").iterdir())
    ids = sorted(res.training)
    assert names == sorted(f"{c}_{i:04d}.nii.gz" for c in ids for i in range(2))
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in ids]
    assert not any(p.name.startswith(".tmp-") for p in out.rglob("*"))
    ds = json.loads((out / "dataset.json").read_text())
    for key in ("channel_names", "labels", "numTraining", "file_ending", "regions_class_order"):
        assert key in ds
    assert ds["channel_names"] == {"0": "t1ce", "1": "flair"} and ds["numTraining"] == 2
    assert all(re.fullmatch(r".+_\d{4}\.nii\.gz", n) for n in names)

    case = next(c for c in discover_cases(phantom_dir) if c.case_id == ids[0])
    loaded = load_case(case, ["t1ce", "flair"])
    img1 = nib.load(str(out / "imagesTr" / f"{ids[0]}_0001.nii.gz"))
    np.testing.assert_allclose(img1.get_fdata(), loaded.images["flair"])
    np.testing.assert_allclose(img1.affine, loaded.affine, atol=1e-5)
    lab = np.asarray(nib.load(str(out / "labelsTr" / f"{ids[0]}.nii.gz")).dataobj)
    np.testing.assert_array_equal(lab, canonical_to_nnunet_labels(loaded.seg))


def test_rule_fused_export_single_channel_plain_labels(phantom_dir, tmp_path):
    out = tmp_path / "Dataset502_Avg"
    seen = []

    def fuser(case):  # mean of the raw channels: (M, X, Y, Z) -> (X, Y, Z)
        seen.append(case.case_id)
        return case.images.mean(axis=0)

    res = export_nnunet(phantom_dir, out, ["t1", "t2"], fuser=fuser, label_mode="labels", log=None)
    assert len(seen) == 2 and len(res.training) == 2
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == sorted(
        f"{c}_0000.nii.gz" for c in res.training
    )
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "fused"} and "regions_class_order" not in ds
    case = discover_cases(phantom_dir)[0]
    loaded = load_case(case, ["t1", "t2"])
    lab = np.asarray(nib.load(str(out / "labelsTr" / f"{case.case_id}.nii.gz")).dataobj)
    np.testing.assert_array_equal(lab, loaded.seg)  # canonical labels kept
    fused = nib.load(str(out / "imagesTr" / f"{case.case_id}_0000.nii.gz")).get_fdata()
    np.testing.assert_allclose(fused, (loaded.images["t1"] + loaded.images["t2"]) / 2, rtol=1e-6)


def test_unlabelled_case_goes_to_imagesTs_and_bad_case_is_reported(phantom_dir, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(phantom_dir, src)
    cases = discover_cases(src)
    cases[0].seg.unlink()  # no label -> test image
    cases[1].files["t1ce"].write_bytes(b"not a nifti")  # corrupt -> failed, export continues
    out = tmp_path / "Dataset503_Mixed"
    res = export_nnunet(src, out, ["t1ce"], log=None)
    assert res.training == [] and res.test == [cases[0].case_id]
    assert cases[1].case_id in res.failed and "t1ce" in res.failed[cases[1].case_id]
    assert (out / "imagesTs" / f"{cases[0].case_id}_0000.nii.gz").is_file()
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 0


def test_cli_export_nnunet_errors_and_success(phantom_dir, tmp_path, capsys):
    assert main(["export", "nnunet", "-d", str(phantom_dir), "-o", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "DatasetXXX_Name" in err and "Traceback" not in err
    missing = tmp_path / "missing"
    assert main(["export", "nnunet", "-d", str(missing), "-o", str(tmp_path / "Dataset1_X")]) == 2
    out = tmp_path / "Dataset504_Cli"
    code = main(
        ["export", "nnunet", "-d", str(phantom_dir), "-o", str(out), "--modalities", "flair"]
    )
    assert code == 0
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "flair"} and ds["numTraining"] == 2
    assert json.loads((out / "fuse4seg_export.json").read_text())["label_mode"] == "regions"


@pytest.fixture(scope="module")
def store_and_model(phantom_dir, tmp_path_factory):
    """A prepared store of the phantom cases and a (random-weight) tiny fuse4seg model.pt."""
    import torch

    from fuse4seg.data import PrepareOptions, prepare_dataset
    from fuse4seg.models import create_fusion_net, create_seg_net
    from fuse4seg.models.model_file import FusionSegModel, save_model_file

    root = tmp_path_factory.mktemp("store")
    opts = PrepareOptions(modalities=("t1ce", "flair"), scale=0.5, split=(0.5, 0.0, 0.5))
    res = prepare_dataset(phantom_dir, root / "prep", opts, log=None)
    assert res.ok
    torch.manual_seed(0)
    model = FusionSegModel(
        "fuse4seg",
        ["t1ce", "flair"],
        create_seg_net("tiny", 1),
        fusion_net=create_fusion_net("tiny", 2),
        preprocessing=dict(res.manifest["normalisation"]),
        fusion_preset="tiny",
        seg_preset="tiny",
    )
    save_model_file(model, root / "model.pt")
    return root / "prep", root / "model.pt", res.manifest


def test_export_store_with_model_fused_channel(store_and_model, tmp_path):
    from fuse4seg.data import PreparedStore
    from fuse4seg.models.model_file import load_model_file

    prep, model_path, manifest = store_and_model
    out = tmp_path / "Dataset505_Fused"
    assert main(["export", "nnunet", "-d", str(prep), "-m", str(model_path), "-o", str(out)]) == 0
    train = manifest["splits"]["train"] + manifest["splits"]["val"]
    test = manifest["splits"]["test"]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == sorted(
        f"{c}_0000.nii.gz" for c in train
    )
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [
        f"{c}_0000.nii.gz" for c in test
    ]
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == [f"{c}.nii.gz" for c in test]
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "fused_fuse4seg"} and ds["numTraining"] == len(train)

    store = PreparedStore(prep)
    cid = test[0]
    img = nib.load(str(out / "imagesTs" / f"{cid}_0000.nii.gz"))
    d, m, h, w = store.image(cid).shape
    assert img.shape == (h, w, d)
    # voxel size of the half-resolution store: 2 mm in-plane, 1 mm axial
    np.testing.assert_allclose(np.abs(np.diag(img.affine))[:3], [2.0, 2.0, 1.0])
    # the written channel is the model's fused image of the stored slices (brain slices only)
    model = load_model_file(model_path)
    z = int(np.argmax(np.asarray(store.image(cid)).reshape(d, -1).max(axis=1)))
    import torch

    with torch.no_grad():
        ref = model.fuse(torch.from_numpy(np.asarray(store.image(cid)[z : z + 1], np.float32)))
    np.testing.assert_allclose(img.get_fdata()[:, :, z], ref[0, 0].numpy(), atol=1e-4)
    lab = np.asarray(nib.load(str(out / "labelsTs" / f"{cid}.nii.gz")).dataobj)
    np.testing.assert_array_equal(
        lab, canonical_to_nnunet_labels(store.label(cid)).transpose(1, 2, 0)
    )


def test_cli_rule_fused_from_brats_folder_uses_prepare_normalisation(phantom_dir, tmp_path):
    from fuse4seg.data import normalise_for_model

    out = tmp_path / "Dataset506_Rule"
    args = [
        "export",
        "nnunet",
        "-d",
        str(phantom_dir),
        "-o",
        str(out),
        "--rule",
        "average",
        "--modalities",
        "t1ce",
        "flair",
    ]
    assert main(args) == 0
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {"0": "fused_average"}
    case = discover_cases(phantom_dir)[0]
    loaded = load_case(case, ["t1ce", "flair"])
    expected = (
        normalise_for_model(loaded.images["t1ce"]) + normalise_for_model(loaded.images["flair"])
    ) / 2
    got = nib.load(str(out / "imagesTr" / f"{case.case_id}_0000.nii.gz")).get_fdata()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.min() >= 0.0 and got.max() <= 1.0
