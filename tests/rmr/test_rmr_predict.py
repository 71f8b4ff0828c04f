"""RMR-Fusion prediction: sliding window keeps shape, NIfTI keeps geometry, errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from fuse4seg.errors import InputError, ModelFileError
from fuse4seg.io.atomic import save_torch_atomic
from fuse4seg.rmr.__main__ import main as rmr_main
from fuse4seg.rmr.networks import create_rmr_net
from fuse4seg.rmr.predict import load_rmr_model, predict_nifti, predict_volume
from fuse4seg.rmr.train import RMRTrainConfig, build_model_dict


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    cfg = RMRTrainConfig(preset="tiny", seg_head="unet", patch_size=(8, 16, 16))
    net = create_rmr_net("tiny", 2, seg_head="unet", patch_size=(8, 16, 16))
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_torch_atomic(build_model_dict(net, cfg), path)
    return path


@pytest.mark.parametrize("shape", [(2, 11, 21, 19), (2, 5, 9, 7), (2, 8, 16, 16)])
def test_sliding_window_returns_input_shape(model_file, shape):
    model = load_rmr_model(model_file, "cpu")
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    fused, labels = predict_volume(model.net, images, roi_size=(8, 16, 16), overlap=0.25)
    assert fused.shape == shape[1:] and labels.shape == shape[1:]
    assert fused.dtype == np.float32 and labels.dtype == np.uint8
    assert fused.min() >= 0 and fused.max() <= 1
    assert set(np.unique(labels)) <= {0, 1, 2, 3}


def test_sliding_window_matches_single_window_forward(model_file):
    """A volume equal to the window is predicted by one forward pass."""
    model = load_rmr_model(model_file, "cpu")
    x = torch.rand(1, 2, 8, 16, 16, generator=torch.Generator().manual_seed(1))
    fused, labels = predict_volume(model.net, x[0], roi_size=(8, 16, 16))
    with torch.no_grad():
        out = model.net(x)
    np.testing.assert_allclose(fused, out.fused[0, 0].numpy(), atol=1e-5)
    assert np.array_equal(labels, out.logits[0].argmax(0).numpy())


def test_predictor_interface_on_nifti_axes(model_file):
    model = load_rmr_model(model_file, "cpu")
    assert (model.method, model.spatial_dims, model.num_classes) == ("rmr3d", 3, 4)
    x = torch.rand(1, 2, 18, 12, 7)  # (1, M, X, Y, Z)
    fused, probs = model.predict_volume(x, tta=True)
    assert fused.shape == (1, 1, 18, 12, 7) and probs.shape == (1, 4, 18, 12, 7)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 18, 12, 7))
    # depth runs along Z: the network sees (Z, X, Y) windows
    plain, _ = predict_volume(model.net, x[0].permute(0, 3, 1, 2).numpy())
    no_tta, _ = model.predict_volume(x, tta=False)
    np.testing.assert_allclose(no_tta[0, 0].numpy(), plain.transpose(1, 2, 0), atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_predict_nifti_keeps_shape_and_affine(model_file, tmp_path, scale):
    model = load_rmr_model(model_file, "cpu")
    model.preprocessing["scale"] = scale  # a store prepared at half in-plane resolution
    affine = np.array([[-1.2, 0, 0, 30.0], [0, -1.0, 0, 12.0], [0, 0, 2.0, -5.0], [0, 0, 0, 1.0]])
    rng = np.random.default_rng(0)
    paths = []
    for name in ("t1", "flair"):
        vol = (rng.random((21, 18, 10)) * 800).astype(np.int16)
        vol[:2] = 0
        p = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(vol, affine), str(p))
        paths.append(p)
    out_f, out_s = tmp_path / "out" / "fused.nii.gz", tmp_path / "out" / "seg.nii.gz"
    fused, labels = predict_nifti(model, paths, out_f, out_s, et_label=4)
    f_img, s_img = nib.load(str(out_f)), nib.load(str(out_s))
    assert f_img.shape == (21, 18, 10) and s_img.shape == (21, 18, 10)
    np.testing.assert_allclose(f_img.affine, affine)
    np.testing.assert_allclose(s_img.affine, affine)
    seg = np.asarray(s_img.dataobj)
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1, 2, 4}
    assert np.array_equal(seg == 4, labels == 3)
    np.testing.assert_allclose(np.asarray(f_img.dataobj), fused, atol=1e-6)
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_predict_nifti_input_errors(model_file, tmp_path):
    model = load_rmr_model(model_file, "cpu")
    a = tmp_path / "a.nii.gz"
    b = tmp_path / "b.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(a))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 9), np.float32), np.eye(4)), str(b))
    with pytest.raises(InputError, match="need 2 inputs"):
        predict_nifti(model, [a], None, None)
    with pytest.raises(InputError, match="b.nii.gz: geometry differs"):
        predict_nifti(model, [a, b], None, None)


def test_model_file_errors(tmp_path, model_file):
    with pytest.raises(ModelFileError, match="not found"):
        load_rmr_model(tmp_path / "none.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="cannot read"):
        load_rmr_model(junk)
    md = torch.load(model_file, weights_only=True)
    md["method"] = "fuse4seg"
    other = tmp_path / "other.pt"
    torch.save(md, other)
    with pytest.raises(ModelFileError, match="expected 'rmr3d'"):
        load_rmr_model(other)


def test_module_cli_reports_user_errors(tmp_path, capsys):
    code = rmr_main(
        [
            "predict",
            "--model",
            str(tmp_path / "none.pt"),
            "--inputs",
            "x.nii.gz",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "error:" in capsys.readouterr().err
    assert rmr_main(["train", "--run-dir", str(tmp_path / "r")]) == 2
