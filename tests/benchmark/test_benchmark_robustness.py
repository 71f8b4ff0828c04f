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


def test_sweep_conditions_cover_each_factor_and_the_paper_test():
    from fuse4seg.benchmark.robustness_sweep import sweep_conditions

    conds = sweep_conditions((0.5, 2.0), (1, 4))
    assert [c.name for c in conds] == [
        "clean",
        "paper_test",
        "noise 0.02",
        "noise 0.08",
        "blur 0.3",
        "blur 1.2",
        "structure 1x(4,16,16)",
        "structure 4x(4,16,16)",
    ]
    assert conds[0].degradation is None
    assert conds[1].degradation.noise_std == 0.04 and conds[1].degradation.blur_sigma == 0.6
    assert conds[-1].degradation.structure_windows == 4 and conds[-1].degradation.noise_std == 0
    with pytest.raises(ValueError, match="severities"):
        sweep_conditions((0.0,))
    with pytest.raises(ValueError, match="windows"):
        sweep_conditions((1.0,), (0,))


def test_sweep_cli_scores_models_on_the_same_degraded_volumes_of_a_fold(store_and_model, tmp_path):
    import csv
    import json
    import shutil

    from fuse4seg.data import PreparedStore

    prep, model = store_and_model
    store = tmp_path / "prep"
    shutil.copytree(prep, store)
    cases = PreparedStore(store).case_ids()
    folds = [{"train": [cases[0]], "val": [cases[1]]}, {"train": [cases[1]], "val": [cases[0]]}]
    (store / "splits_final.json").write_text(json.dumps(folds))
    twin = tmp_path / "twin" / "model.pt"
    twin.parent.mkdir()
    shutil.copy(model, twin)
    out = tmp_path / "sweep"
    args = ["benchmark", "robustness", "-m", str(model), str(twin), "-i", str(store)]
    args += ["-o", str(out), "--fold", "1", "--sweep", "--severities", "1", "--windows", "1"]
    assert main([*args, "--device", "cpu"]) == 0
    rows = list(csv.DictReader((out / "sweep_cases.csv").open()))
    names = sorted({r["model"] for r in rows})
    assert len(names) == 2 and names[0].startswith("fuse4seg (")  # same method: folder added
    assert {r["case"] for r in rows} == {cases[0]}  # fold 1's held-out case only
    assert len(rows) == 2 * 5  # clean, paper_test, noise, blur, structure
    by_model = {n: {r["condition"]: r for r in rows if r["model"] == n} for n in names}
    for cond, row in by_model[names[0]].items():
        other = by_model[names[1]][cond]
        for key in ("Dice_NCR", "Dice_ED", "Dice_ET", "EN", "AG"):
            assert row[key] == other[key], (cond, key)  # identical model, identical volumes
    assert by_model[names[0]]["clean"]["EN"] != by_model[names[0]]["noise 0.04"]["EN"]
    md = (out / "sweep.md").read_text()
    assert "| condition |" in md and "structure 1x(4,16,16)" in md
    assert (out / "dice_vs_severity.png").stat().st_size > 1000
    assert (out / "examples.png").stat().st_size > 1000
    # --names must name every model
    assert main([*args, "--names", "a", "--device", "cpu", "--overwrite"]) == 2
