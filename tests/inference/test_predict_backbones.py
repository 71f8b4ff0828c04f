"""``fuse4seg predict`` with the benchmark's MONAI backbones (DynUNet, SwinUNETR) on a fixed
input (the M modalities as channels, or a classical rule's fused image)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from fuse4seg.cli.main import main
from fuse4seg.data import discover_cases, load_case
from fuse4seg.data.preprocess import brain_mask
from fuse4seg.errors import ConfigError, ModelFileError
from fuse4seg.fusion_rules import apply_fusion_rule
from fuse4seg.inference import Predictor
from fuse4seg.inference.predictor import prepare_normaliser
from fuse4seg.models.backbones import (
    PaddedBackbone,
    create_backbone,
    save_backbone_model_file,
)
from fuse4seg.models.model_file import FusionSegModel, load_model_file, save_model_file

MODALITIES = ["t1ce", "flair"]
PREPROCESSING = {"scale": 1.0, "percentiles": [0.5, 99.5]}


def _backbone(name: str, in_channels: int, seed: int = 0) -> PaddedBackbone:
    """Tiny backbone with random weights; the last layer's bias spread so all classes occur."""
    torch.manual_seed(seed)
    net = create_backbone(name, in_channels, 4, "tiny")
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.copy_(torch.tensor([0.3, 0.0, 0.1, -0.1]))
    return net.eval()


def _expected_seg(net: torch.nn.Module, case_dir: Path, fusion_rule: str | None) -> np.ndarray:
    """The benchmark's input construction and network, applied by hand to every brain slice."""
    case = discover_cases(case_dir)[0]
    loaded = load_case(case, MODALITIES)
    vols = [loaded.images[m] for m in MODALITIES]
    brain = brain_mask(vols)
    norm = np.stack([prepare_normaliser(v, brain, PREPROCESSING) for v in vols]).astype(np.float32)
    seg = np.zeros(brain.shape, np.uint8)
    zs = [z for z in range(brain.shape[2]) if brain[:, :, z].any()]
    x = torch.from_numpy(np.ascontiguousarray(norm[:, :, :, zs].transpose(3, 0, 1, 2)))
    with torch.no_grad():
        x_in = x if fusion_rule is None else apply_fusion_rule(fusion_rule, x)
        logits = net(x_in)
    seg[:, :, zs] = logits.argmax(1).numpy().astype(np.uint8).transpose(1, 2, 0)
    return seg


def _predict_cli(model: Path, case_dir: Path, out: Path) -> int:
    args = ["predict", "-m", str(model), "-i", str(case_dir), "-o", str(out), "--device", "cpu"]
    return main([*args, "--no-progress"])


@pytest.mark.parametrize("name", ["dynunet", "swinunetr"])
def test_multichannel_backbone_predict(name, phantom_root, tmp_path, capsys):
    net = _backbone(name, len(MODALITIES))
    path = tmp_path / "model.pt"
    save_backbone_model_file(net, path, MODALITIES, preprocessing=PREPROCESSING, input_size=40)

    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain dict, no pickled code
    seg_entry = raw["segmentation"]
    assert raw["method"] == "multichannel" and raw["fusion"] is None and raw["fusion_rule"] is None
    assert seg_entry["arch"] == name and seg_entry["in_channels"] == 2
    assert seg_entry["config"]["backbone"] == name and seg_entry["preset"] == "tiny"

    model = load_model_file(path)
    assert isinstance(model, FusionSegModel) and isinstance(model.seg_net, PaddedBackbone)
    assert model.seg_net.config == net.config and not model.training
    x = torch.rand(3, 2, 37, 29, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fused, logits = model(x)
        assert fused is None
        assert torch.equal(logits, net(x))  # round trip: identical network
    # save -> load -> save -> load gives the same weights and outputs
    path2 = tmp_path / "again.pt"
    save_model_file(model, path2)
    again = load_model_file(path2)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k

    case_dir = phantom_root / "Phantom_000"
    pred = Predictor(model, "cpu", batch_size=7, keep_probabilities=True).predict_case(case_dir)
    np.testing.assert_array_equal(pred.seg, _expected_seg(net, case_dir, None))
    assert len(np.unique(pred.seg)) >= 2
    in_memory = FusionSegModel("multichannel", MODALITIES, net, preprocessing=PREPROCESSING)
    ref = Predictor(in_memory, "cpu", batch_size=7, keep_probabilities=True).predict_case(case_dir)
    np.testing.assert_array_equal(pred.probabilities, ref.probabilities)

    out = tmp_path / "out"
    assert _predict_cli(path, case_dir, out) == 0, capsys.readouterr().err
    ref_img = nib.load(case_dir / "Phantom_000_t1ce.nii.gz")
    seg_img = nib.load(out / "Phantom_000_seg.nii.gz")
    assert seg_img.shape == ref_img.shape == (40, 36, 16)
    np.testing.assert_array_equal(seg_img.affine, ref_img.affine)
    labels = np.asanyarray(seg_img.dataobj)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 4}  # 2021 naming: ET written as 4
    np.testing.assert_array_equal(labels, pred.seg_in_file_convention)
    assert not (out / "Phantom_000_fused.nii.gz").exists()  # multichannel: no fused image
    args = json.loads((out / "predict_args.json").read_text())
    assert args["method"] == "multichannel" and args["modalities"] == MODALITIES


def test_rule_input_backbone(phantom_root, tmp_path):
    # A backbone on the modality mean (rule "average"): one input channel, fused image written.
    net = _backbone("dynunet", 1, seed=3)
    path = tmp_path / "mean.pt"
    save_backbone_model_file(
        net, path, MODALITIES, fusion_rule="average", preprocessing=PREPROCESSING
    )
    raw = torch.load(path, weights_only=True)
    assert raw["method"] == "average" and raw["fusion_rule"] == "average"
    assert raw["segmentation"]["in_channels"] == 1
    model = load_model_file(path)
    case_dir = phantom_root / "Phantom_001"
    pred = Predictor(model, "cpu").predict_case(case_dir)
    np.testing.assert_array_equal(pred.seg, _expected_seg(net, case_dir, "average"))
    assert pred.fused is not None and pred.fused.shape == pred.seg.shape
    with pytest.raises(ConfigError, match="input channels"):
        save_backbone_model_file(net, tmp_path / "x.pt", MODALITIES)  # 1 channel, M = 2 input
    with pytest.raises(ConfigError, match="unknown fusion rule"):
        save_backbone_model_file(net, tmp_path / "x.pt", MODALITIES, fusion_rule="median")


def _rewrite(path: Path, out: Path, edit) -> Path:
    data = torch.load(path, weights_only=True)
    edit(data)
    torch.save(data, out)
    return out


def test_corrupt_or_unknown_arch_is_a_clear_error(phantom_root, tmp_path, capsys):
    path = tmp_path / "model.pt"
    save_backbone_model_file(_backbone("dynunet", 2), path, MODALITIES)

    def set_arch(value):
        return lambda d: d["segmentation"].__setitem__("arch", value)

    cases = {
        "unknown": (set_arch("unet9"), r"unknown segmentation arch 'unet9' \(known: segnet, "),
        "type": (set_arch(3), r"corrupt model file \('arch' has type int\)"),
        "mismatch": (set_arch("swinunetr"), r"arch 'swinunetr', config backbone 'dynunet'"),
        "segnet": (set_arch("segnet"), "incompatible network weights"),
        "channels": (
            lambda d: d.__setitem__("modalities", ["t1", "t1ce", "flair"]),
            "dynunet takes 2 channels, the input has 3",
        ),
        "rule": (lambda d: d.__setitem__("fusion_rule", "median"), "unknown fusion_rule 'median'"),
        "weights": (
            lambda d: d["segmentation"]["config"].__setitem__("filters", [8, 16, 32, 32]),
            "incompatible network weights",
        ),
        "hyper": (
            lambda d: d["segmentation"]["config"].__setitem__("filters", "wide"),
            "incompatible network weights",
        ),
    }
    for name, (edit, message) in cases.items():
        bad = _rewrite(path, tmp_path / f"{name}.pt", edit)
        with pytest.raises(ModelFileError, match=message):
            load_model_file(bad)

    # through the CLI: exit 2, one line naming the file, nothing written
    out = tmp_path / "out"
    assert _predict_cli(tmp_path / "unknown.pt", phantom_root / "Phantom_000", out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'unknown.pt'}: unknown segmentation arch")
    assert err.count("\n") == 1 and not out.exists()


def test_files_without_arch_key_still_load(tmp_path):
    # Backbone model.pt written before "arch" existed: the backbone comes from the config.
    net = _backbone("dynunet", 2)
    path = tmp_path / "model.pt"
    save_backbone_model_file(net, path, MODALITIES)
    old = _rewrite(path, tmp_path / "old.pt", lambda d: d["segmentation"].pop("arch"))
    model = load_model_file(old)
    x = torch.rand(2, 2, 24, 24)
    with torch.no_grad():
        assert torch.equal(model(x)[1], net(x))


def test_unknown_fusion_arch(tmp_path):
    from fuse4seg.models import create_fusion_net, create_seg_net

    model = FusionSegModel(
        "fuse4seg", MODALITIES, create_seg_net("tiny", 1), fusion_net=create_fusion_net("tiny", 2)
    )
    path = tmp_path / "model.pt"
    save_model_file(model, path)
    assert torch.load(path, weights_only=True)["segmentation"]["arch"] == "segnet"
    load_model_file(path)
    bad = _rewrite(path, tmp_path / "bad.pt", lambda d: d["fusion"]["config"].update(arch="v9"))
    with pytest.raises(ModelFileError, match="unknown fusion arch 'v9'"):
        load_model_file(bad)


def test_benchmark_backbone_row_model_predicts(tmp_path, capsys):
    """The ``dynunet`` row of ``benchmark seg`` (trainer-written model.pt) -> ``predict``."""
    from fuse4seg.benchmark.seg import run_seg_benchmark
    from fuse4seg.data import PrepareOptions, prepare_dataset
    from fuse4seg.data.phantom import write_phantom_dataset

    write_phantom_dataset(tmp_path / "raw", cases=4, shape=(32, 32, 16), seed=1)
    opts = PrepareOptions(modalities=tuple(MODALITIES), split=(0.5, 0.25, 0.25))
    assert prepare_dataset(tmp_path / "raw", tmp_path / "prep", opts, log=None).ok
    overrides = {"warmup_epochs": 1, "rollout_epochs": 1, "steps_per_epoch": 1, "batch_size": 4}
    res = run_seg_benchmark(
        tmp_path / "prep",
        tmp_path / "bench",
        methods=["dynunet"],
        preset="tiny",
        overrides=overrides,
        device="cpu",
        log=None,
    )
    assert not res.failed
    path = tmp_path / "bench" / "runs" / "dynunet" / "seed0" / "model.pt"
    raw = torch.load(path, weights_only=True)
    assert raw["segmentation"]["arch"] == "dynunet" and raw["method"] == "multichannel"
    case_dir = next(p for p in (tmp_path / "raw").iterdir() if p.is_dir())
    out = tmp_path / "out"
    assert _predict_cli(path, case_dir, out) == 0, capsys.readouterr().err
    seg = nib.load(out / f"{case_dir.name}_seg.nii.gz")
    assert seg.shape == (32, 32, 16)
    assert set(np.unique(np.asanyarray(seg.dataobj)).tolist()) <= {0, 1, 2, 4}
