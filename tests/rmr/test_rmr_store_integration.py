"""End to end on a real prepare store: phantom NIfTI -> prepare -> train_rmr -> Predictor."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from fuse4seg.errors import InputError
from fuse4seg.rmr.predict import load_rmr_model
from fuse4seg.rmr.train import train_rmr


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from fuse4seg.data.phantom import write_phantom_dataset
    from fuse4seg.data.prepare import PrepareOptions, prepare_dataset

    root = tmp_path_factory.mktemp("rmrstore")
    folders = write_phantom_dataset(root / "raw", cases=3, shape=(32, 32, 16), seed=0)
    options = PrepareOptions(modalities=("t1", "flair"), scale=0.5, split=(0.34, 0.33, 0.33))
    prepare_dataset(root / "raw", root / "prep", options, log=None)
    return root / "prep", folders


def test_train_on_prepare_store_then_predict_with_the_main_predictor(prepared, tmp_path):
    prep, folders = prepared
    cfg = {
        "preset": "tiny",
        "seg_head": "unet",
        "patch_size": (8, 16, 16),
        "stage1_steps": 1,
        "stage2_steps": 1,
    }
    path = train_rmr(prep, tmp_path / "run", cfg, device="cpu", max_steps=1, log=None)
    md = torch.load(path, weights_only=True)
    assert md["normalisation"]["scale"] == 0.5 and "store" in md["normalisation"]
    from fuse4seg.inference import Predictor

    model = load_rmr_model(path, "cpu")
    case = folders[0]
    pred = Predictor(model, device="cpu", amp=False).predict_case(case)
    ref = nib.load(str(next(case.glob("*_t1.nii.gz"))))
    assert pred.seg.shape == pred.fused.shape == ref.shape
    np.testing.assert_allclose(pred.affine, ref.affine)


def test_train_rmr_missing_store(tmp_path):
    with pytest.raises(InputError, match="not found|does not exist"):
        train_rmr(tmp_path / "nope", tmp_path / "run", {"preset": "tiny"}, log=None)


def test_train_and_predict_through_the_main_cli_verbs(prepared, tmp_path, capsys):
    """`fuse4seg train --method rmr3d` then `fuse4seg predict` (3D sliding window) -> NIfTI."""
    from fuse4seg.cli.main import main

    prep, folders = prepared
    yaml_cfg = tmp_path / "rmr.yaml"
    yaml_cfg.write_text(
        "seg_head: unet\npatch_size: [8, 16, 16]\nstage1_steps: 1\nstage2_steps: 1\n"
    )
    run = tmp_path / "run"
    args = ["train", "-d", str(prep), "-o", str(run), "--method", "rmr3d", "--preset", "tiny",
            "--config", str(yaml_cfg), "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert torch.load(run / "model.pt", weights_only=True)["method"] == "rmr3d"
    out = tmp_path / "pred"
    assert main(["predict", "-m", str(run / "model.pt"), "-i", str(folders[0]), "-o", str(out),
                 "--device", "cpu", "--no-progress"]) == 0  # fmt: skip
    case_id = folders[0].name
    ref = nib.load(str(next(folders[0].glob("*_t1.nii.gz"))))
    seg = nib.load(str(out / f"{case_id}_seg.nii.gz"))
    fused = nib.load(str(out / f"{case_id}_fused.nii.gz"))
    assert seg.shape == fused.shape == ref.shape
    np.testing.assert_allclose(seg.affine, ref.affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 4}  # 2021 naming: ET = 4
    capsys.readouterr()
    assert main(args[:-3] + ["--no-ema", "--device", "cpu"]) == 2
    assert "--no-ema cannot be used with method 'rmr3d'" in capsys.readouterr().err


def test_train_on_a_cross_validation_fold_uses_its_training_cases(tmp_path, monkeypatch):
    """`fuse4seg train --method rmr3d --fold i`: patches from fold i's training cases only."""
    import json

    from fuse4seg.cli.main import main
    from fuse4seg.data import PreparedStore
    from fuse4seg.data import volume_store as rmr_data
    from fuse4seg.data.phantom import write_phantom_dataset
    from fuse4seg.data.prepare import PrepareOptions, prepare_dataset

    write_phantom_dataset(tmp_path / "raw", cases=3, shape=(32, 32, 16), seed=1)
    options = PrepareOptions(modalities=("t1", "flair"), scale=0.5, folds=3)
    assert prepare_dataset(tmp_path / "raw", tmp_path / "prep", options, log=None).ok
    fold_train = PreparedStore(tmp_path / "prep").fold(1).case_ids("train")
    assert len(fold_train) == 2
    seen: list[list[str]] = []
    original = rmr_data.PatchSampler.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(list(self.case_list))

    monkeypatch.setattr(rmr_data.PatchSampler, "__init__", spy)
    yaml_cfg = tmp_path / "rmr.yaml"
    yaml_cfg.write_text(
        "seg_head: unet\npatch_size: [8, 16, 16]\nstage1_steps: 1\nstage2_steps: 1\n"
    )
    run = tmp_path / "run"
    args = ["train", "-i", str(tmp_path / "prep"), "-o", str(run), "--method", "rmr3d",
            "--preset", "tiny", "--config", str(yaml_cfg), "--device", "cpu", "--no-progress",
            "--fold", "1"]  # fmt: skip
    assert main(args) == 0
    assert seen and all(sorted(cases) == sorted(fold_train) for cases in seen)
    assert json.loads((run / "run_info.json").read_text())["fold"] == 1
