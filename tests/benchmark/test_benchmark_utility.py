"""``benchmark utility``: Dice of one reference follower on each fuser's images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fuse4seg.cli.main import main


@pytest.fixture(scope="module")
def store_and_models(tmp_path_factory) -> tuple[Path, Path, Path]:
    from fuse4seg.data import PreparedStore, PrepareOptions, prepare_dataset
    from fuse4seg.data.phantom import write_phantom_dataset
    from fuse4seg.models import create_fusion_net, create_seg_net
    from fuse4seg.models.model_file import FusionSegModel, save_model_file

    root = tmp_path_factory.mktemp("utility")
    write_phantom_dataset(root / "raw", cases=3, shape=(40, 40, 16), seed=4)
    opts = PrepareOptions(modalities=("t1ce", "flair"), split=(0.7, 0.0, 0.3))
    assert prepare_dataset(root / "raw", root / "prep", opts, log=None).ok
    cases = PreparedStore(root / "prep").case_ids()
    folds = [{"train": cases[:2], "val": cases[2:]}, {"train": cases[2:], "val": cases[:2]}]
    (root / "prep" / "splits_final.json").write_text(json.dumps(folds))
    torch.manual_seed(0)
    avg = FusionSegModel("average", ["t1ce", "flair"], create_seg_net("tiny", 1),
                         fusion_rule="average", seg_preset="tiny")  # fmt: skip
    lead = FusionSegModel("fuse4seg", ["t1ce", "flair"], create_seg_net("tiny", 1),
                          fusion_net=create_fusion_net("tiny", 2), fusion_preset="tiny",
                          seg_preset="tiny")  # fmt: skip
    save_model_file(avg.eval(), root / "average.pt")
    save_model_file(lead.eval(), root / "fuse4seg.pt")
    return root / "prep", root / "average.pt", root / "fuse4seg.pt"


def test_average_rule_through_its_own_follower_equals_the_model(store_and_models):
    from fuse4seg.benchmark.utility import model_fuser, rule_fuser, task_utility
    from fuse4seg.data import PreparedStore
    from fuse4seg.metrics.segmentation import dice_scores
    from fuse4seg.models.model_file import load_model_file

    prep, avg_path, lead_path = store_and_models
    store = PreparedStore(prep).fold(0)
    avg = load_model_file(avg_path)
    ids = store.case_ids("val")
    assert np.asarray(store.image(ids[0])).shape[-1] % 16  # no padding may change the result
    res = task_utility({"avg": rule_fuser("average"), "lead": model_fuser(load_model_file(
        lead_path))}, avg, store, ids, log=None)  # fmt: skip
    # the model's own forward pass on the same slices
    expected = []
    for cid in ids:
        x = torch.from_numpy(np.asarray(store.image(cid), dtype=np.float32))
        with torch.no_grad():
            _, logits = avg(x)
        pred = logits.argmax(1).numpy()
        s = dice_scores(pred, np.asarray(store.label(cid)), {"NCR": (1,), "ED": (2,), "ET": (3,)})
        expected.append(np.mean([s["Dice_NCR"], s["Dice_ED"], s["Dice_ET"]]))
    assert res["summary"]["avg"]["Dice_mean"] == pytest.approx(float(np.mean(expected)), abs=1e-9)
    assert set(res["summary"]) == {"avg", "lead"}
    assert len(res["rows"]) == 2 * len(ids)


def test_adaptation_is_seeded_and_changes_the_follower(store_and_models):
    from fuse4seg.benchmark.utility import rule_fuser, task_utility
    from fuse4seg.data import PreparedStore
    from fuse4seg.models.model_file import load_model_file

    prep, avg_path, _ = store_and_models
    store = PreparedStore(prep).fold(0)
    avg = load_model_file(avg_path)
    kw = dict(case_ids=store.case_ids("val"), train_ids=store.case_ids("train"), log=None)
    fusers = {"max": rule_fuser("max")}
    frozen = task_utility(fusers, avg, store, **kw)["rows"]
    a = task_utility(fusers, avg, store, adapt_steps=3, seed=1, **kw)["rows"]
    b = task_utility(fusers, avg, store, adapt_steps=3, seed=1, **kw)["rows"]
    assert a == b
    assert a != frozen
    # the reference model is not changed by the adaptation
    again = task_utility(fusers, avg, store, **kw)["rows"]
    assert again == frozen


def test_utility_errors_and_cli(store_and_models, tmp_path, capsys):
    from fuse4seg.benchmark.utility import model_fuser, rule_fuser, task_utility
    from fuse4seg.errors import ConfigError
    from fuse4seg.models import create_seg_net
    from fuse4seg.models.model_file import FusionSegModel

    prep, avg_path, lead_path = store_and_models
    with pytest.raises(ConfigError, match="unknown fusion rule"):
        rule_fuser("median")
    multi = FusionSegModel("multichannel", ["t1ce", "flair"], create_seg_net("tiny", 2))
    with pytest.raises(ConfigError, match="no fused image"):
        model_fuser(multi)(torch.zeros(1, 2, 16, 16))
    with pytest.raises(ConfigError, match="one input channel"):
        task_utility({"avg": rule_fuser("average")}, multi, None, ["x"], log=None)
    out = tmp_path / "util"
    args = ["benchmark", "utility", "-i", str(prep), "-o", str(out), "--follower", str(avg_path)]
    args += ["--rules", "average", "max", "--fusion-models", str(lead_path), "--fold", "0"]
    assert main([*args, "--device", "cpu"]) == 0
    md = (out / "utility.md").read_text()
    assert "| rule average |" in md and "| rule max |" in md and "| fuse4seg |" in md
    rows = (out / "utility_cases.csv").read_text().splitlines()
    assert rows[0] == "fuser,case,Dice_NCR,Dice_ED,Dice_ET,Dice_mean" and len(rows) == 1 + 3
    capsys.readouterr()
    bad = ["benchmark", "utility", "-i", str(prep), "-o", str(tmp_path / "u2"), "--follower"]
    assert main([*bad, str(lead_path), "--rules", "--fusion-models", str(lead_path),
                 "--names", "a", "b", "--device", "cpu"]) == 2  # fmt: skip
    assert "--names gives 2 names for 1 models" in capsys.readouterr().err


def test_fused_folder_of_an_external_method(store_and_models, tmp_path, capsys):
    """Fused PNG slices named as `export brats-fuse` names them score exactly like the rule
    that made them, quantised to 8 bits as the PNG files are."""
    import shutil

    from fuse4seg.benchmark.utility import FusedFolder, task_utility
    from fuse4seg.data import PreparedStore
    from fuse4seg.errors import InputError
    from fuse4seg.fusion_rules import apply_fusion_rule
    from fuse4seg.models.model_file import load_model_file

    prep, avg_path, _ = store_and_models
    exp = tmp_path / "exp"
    assert main(["export", "brats-fuse", "-i", str(prep), "-o", str(exp), "--rule", "max"]) == 0
    method = tmp_path / "method"  # an external method writes its slices into one folder
    method.mkdir()
    for png in exp.glob("*/fused/max/t1ce+flair/*.png"):
        shutil.copy(png, method / png.name)
    store = PreparedStore(prep).fold(0)
    ids = store.case_ids("val")

    def max_8bit(x):
        return torch.round(apply_fusion_rule("max", x).clamp(0, 1) * 255) / 255

    avg = load_model_file(avg_path)
    res = task_utility({"folder": FusedFolder(method), "rule": max_8bit}, avg, store, ids,
                       log=None)  # fmt: skip
    by = {(r["fuser"], r["case"]): r["Dice_mean"] for r in res["rows"]}
    for cid in ids:
        assert by[("folder", cid)] == by[("rule", cid)]
    # adaptation reads the training cases' slices from the folder the same way
    kw = dict(adapt_steps=2, train_ids=store.case_ids("train"), seed=3, log=None)
    a = task_utility({"f": FusedFolder(method)}, avg, store, ids, **kw)["rows"]
    b = task_utility({"f": max_8bit}, avg, store, ids, **kw)["rows"]
    assert [r["Dice_mean"] for r in a] == [r["Dice_mean"] for r in b]
    # errors: no such folder, no slice files, one slice twice, wrong size, a missing case
    with pytest.raises(InputError, match="not found"):
        FusedFolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no fused slices"):
        FusedFolder(tmp_path / "empty")
    with pytest.raises(InputError, match="two fused images"):
        FusedFolder(exp)  # modality and fused slices share their names
    one = sorted(method.glob("*.png"))[0]
    small = tmp_path / "small"
    small.mkdir()
    from fuse4seg.inference.image_io import write_grey_png

    write_grey_png(small / one.name, np.zeros((8, 8)))
    case = one.name.rsplit("_z", 1)[0]
    with pytest.raises(InputError, match="store's slices"):
        FusedFolder(small).slices(case, [int(one.stem.rsplit("_z", 1)[1])], (40, 40))
    with pytest.raises(InputError, match="no fused slice of case"):
        FusedFolder(small).slices("other_case", [0], (40, 40))
    # CLI: NAME=DIR, and a bad folder is a one-line error with exit 2
    out = tmp_path / "util"
    args = ["benchmark", "utility", "-i", str(prep), "-o", str(out), "--follower", str(avg_path),
            "--rules", "--fold", "0", "--device", "cpu"]  # fmt: skip
    assert main([*args, "--fused-folders", f"ext={method}"]) == 0
    assert "| ext |" in (out / "utility.md").read_text()
    capsys.readouterr()
    assert main([*args[:5], str(tmp_path / "u2"), *args[6:], "--fused-folders", str(exp)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "two fused images" in err[0]
