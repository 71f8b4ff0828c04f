"""RMR-Fusion prediction: sliding window keeps shape, the main Predictor keeps the NIfTI
geometry, errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from fuse4seg.errors import InputError, ModelFileError
from fuse4seg.io.atomic import save_torch_atomic
from fuse4seg.rmr.__main__ import main as rmr_main
from fuse4seg.rmr.networks import create_rmr_net
from fuse4seg.rmr.predict import load_rmr_model, predict_volume, windows_per_pass
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


def test_windows_per_pass_batches_small_windows_only_and_does_not_change_the_result(model_file):
    assert windows_per_pass((16, 32, 32)) == 8 and windows_per_pass((8, 16, 16)) == 64
    assert windows_per_pass((32, 64, 64)) == 1 and windows_per_pass((32, 128, 128)) == 1
    model = load_rmr_model(model_file, "cpu")
    images = np.random.default_rng(2).random((2, 20, 40, 36), dtype=np.float32)
    f1, l1 = predict_volume(model.net, images, sw_batch_size=1)
    fd, ld = predict_volume(model.net, images)  # default: 64 windows per pass
    np.testing.assert_allclose(fd, f1, atol=1e-5)
    assert (ld == l1).mean() > 0.999  # argmax ties at float rounding only


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


def _case_folder(root, affine, shapes=((21, 18, 10), (21, 18, 10))):
    """A BraTS 2021 case folder of random T1 / FLAIR volumes (a 2-voxel empty border)."""
    case = root / "BraTS2021_00001"
    case.mkdir(parents=True)
    rng = np.random.default_rng(0)
    vols = []
    for name, shape in zip(("t1", "flair"), shapes, strict=True):
        vol = (rng.random(shape) * 800).astype(np.int16)
        vol[:2] = 0
        nib.save(nib.Nifti1Image(vol, affine), str(case / f"{case.name}_{name}.nii.gz"))
        vols.append(vol)
    return case, vols


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_main_predictor_keeps_shape_and_affine(model_file, tmp_path, scale):
    """rmr3d volumes go through fuse4seg predict's Predictor (the one NIfTI predictor)."""
    from fuse4seg.data.volume_store import volumes_to_store_layout
    from fuse4seg.inference import Predictor

    model = load_rmr_model(model_file, "cpu")
    model.preprocessing["scale"] = scale  # a store prepared at half in-plane resolution
    affine = np.array([[-1.2, 0, 0, 30.0], [0, -1.0, 0, 12.0], [0, 0, 2.0, -5.0], [0, 0, 0, 1.0]])
    case, vols = _case_folder(tmp_path, affine)
    pred = Predictor(model, device="cpu", amp=False).predict_case(case)
    assert pred.seg.shape == pred.fused.shape == (21, 18, 10)
    np.testing.assert_allclose(pred.affine, affine)
    assert pred.seg.dtype == np.uint8 and set(np.unique(pred.seg)) <= {0, 1, 2, 3}
    # the model's own prediction on the volumes normalised as `prepare` does
    x = volumes_to_store_layout(vols).transpose(1, 2, 3, 0)[None]  # (1, M, X, Y, Z)
    fused, probs = model.predict_volume(torch.from_numpy(np.ascontiguousarray(x)))
    assert np.array_equal(pred.seg, probs[0].argmax(0).numpy())
    brain = (vols[0] != 0) | (vols[1] != 0)
    np.testing.assert_allclose(pred.fused[brain], fused[0, 0].numpy()[brain], atol=1e-6)


def test_main_predictor_input_errors(model_file, tmp_path):
    from fuse4seg.inference import Predictor

    predictor = Predictor(load_rmr_model(model_file, "cpu"), device="cpu", amp=False)
    case, _ = _case_folder(tmp_path / "a", np.eye(4), shapes=((8, 8, 8), (8, 8, 9)))
    with pytest.raises(InputError, match=r"flair.nii.gz: shape .* differs from"):
        predictor.predict_case(case)
    (case / f"{case.name}_flair.nii.gz").unlink()
    with pytest.raises(InputError, match="missing flair"):
        predictor.predict_case(case)


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
    assert rmr_main(["train", "--run-dir", str(tmp_path / "r")]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # NIfTI prediction is `fuse4seg predict` (every method)
        rmr_main(["predict", "--model", "m.pt", "--inputs", "a.nii.gz", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):  # and robustness `fuse4seg benchmark robustness`
        rmr_main(["robustness", "--model", "m.pt", "--out", str(tmp_path), "--phantom", "1"])


def test_all_zero_windows_share_one_pass_and_give_the_full_result(model_file, monkeypatch):
    model = load_rmr_model(model_file, "cpu")
    images = np.zeros((2, 24, 48, 48), dtype=np.float32)
    images[:, 6:14, 10:30, 12:28] = np.random.default_rng(3).random((2, 8, 20, 16))
    calls: list[int] = []
    forward = type(model.net).forward

    def counting(self, x):
        calls.append(int(x.shape[0]))
        return forward(self, x)

    monkeypatch.setattr(type(model.net), "forward", counting)
    fused, labels = predict_volume(model.net, images, sw_batch_size=1)
    monkeypatch.setattr(type(model.net), "forward", forward)
    from monai.data.utils import dense_patch_slices

    windows = dense_patch_slices((24, 48, 48), (8, 16, 16), (6, 12, 12))
    filled = sum(1 for w in windows if images[(slice(None), *w)].any())
    assert len(windows) == 64 and 0 < filled < 64
    assert calls == [1] * (filled + 1)  # one pass per filled window, one for all blank ones
    # reference: every window through the network (no sharing)
    from monai.inferers import sliding_window_inference

    def run(w):
        out = model.net(w)
        return torch.cat([out.fused, out.logits], dim=1)

    with torch.no_grad():
        ref = sliding_window_inference(
            torch.from_numpy(images)[None], (8, 16, 16), 1, run, overlap=0.25, mode="gaussian"
        )
    np.testing.assert_allclose(fused, ref[0, 0].clamp(0, 1).numpy(), atol=1e-6)
    assert np.array_equal(labels, ref[0, 1:].argmax(0).numpy())
