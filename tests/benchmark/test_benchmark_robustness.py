"""``benchmark robustness`` wiring: a 2D fuse4seg model on a prepared store, clean vs degraded."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuse4seg.cli.main import main


@pytest.fixture(scope="module")
def store_and_model(tmp_path_factory) -> tuple[Path, Path]:
    import torch

    from fuse4seg.data import PrepareOptions, prepare_dataset
    from fuse4seg.data.phantom import write_phantom_dataset
    from fuse4seg.models import create_fusion_net, create_seg_net
    from fuse4seg.models.model_file import FusionSegModel, save_model_file

    root = tmp_path_factory.mktemp("robust")
    write_phantom_dataset(root / "raw", cases=2, shape=(24, 24, 16), seed=2)
    opts = PrepareOptions(modalities=("t1ce", "flair"), split=(0.5, 0.0, 0.5))
    assert prepare_dataset(root / "raw", root / "prep", opts, log=None).ok
    torch.manual_seed(0)
    model = FusionSegModel(
        "fuse4seg",
        ["t1ce", "flair"],
        create_seg_net("tiny", 1),
        fusion_net=create_fusion_net("tiny", 2),
        fusion_preset="tiny",
        seg_preset="tiny",
    )
    save_model_file(model, root / "model.pt")
    return root / "prep", root / "model.pt"


def test_robustness_cli_writes_tables(store_and_model, tmp_path):
    prep, model = store_and_model
    out = tmp_path / "rob"
    args = [
        "benchmark",
        "robustness",
        "-m",
        str(model),
        "-d",
        str(prep),
        "-o",
        str(out),
        "--max-cases",
        "1",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    md = (out / "robustness.md").read_text()
    assert "Dice_mean" in md and "clean" in md
    assert (out / "robustness.csv").is_file()


def test_robustness_cli_bad_model_file(store_and_model, tmp_path, capsys):
    prep, _ = store_and_model
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a torch file")
    code = main(["benchmark", "robustness", "-m", str(bad), "-d", str(prep), "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "Traceback" not in err
