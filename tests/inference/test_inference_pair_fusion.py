"""``fuse4seg fuse`` and pair fusion: Harvard MRI-PET/CT pairs, colour, bit depth, bad pairs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fuse4seg.cli.main import main
from fuse4seg.errors import InputError, InputWarning
from fuse4seg.inference.image_io import read_image, rgb_to_ycbcr
from fuse4seg.inference.pair_fusion import fuse_images, pair_files, rule_fuser

#: Cb/Cr of the written RGB PNG vs the PET's, in [0, 1] units: rounding R, G, B to 8 bits
#: moves Cr by at most 0.5/255 * 0.713 * (0.701 + 0.587 + 0.114) = 0.4998/255 (Cb alike),
#: plus ~1e-4 from OpenCV's rounded inverse coefficients.
CHROMA_TOL = 0.5 / 255 + 1e-4


def _copy_pairs(src: Path, names: list[str], dst: Path) -> tuple[Path, Path]:
    a, b = (dst / "A", dst / "B")
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    other = next(p for p in src.iterdir() if p.is_dir() and p.name != "MRI")
    for n in names:  # A: MRI, B: the other modality (CT, PET or SPECT)
        shutil.copy(src / "MRI" / n, a / n)
        shutil.copy(other / n, b / n)
    return a, b


@pytest.mark.realdata
def test_mri_pet_colour_output_keeps_pet_chroma(harvard_dir, tmp_path):
    a, b = _copy_pairs(harvard_dir / "MRI_PET", ["11.png", "20.png"], tmp_path)
    out = tmp_path / "out"
    rc = main(
        ["fuse", "-a", str(a), "-b", str(b), "-o", str(out), "--rule", "max", "--no-progress"]
    )
    assert rc == 0
    for name in ("11.png", "20.png"):
        with Image.open(out / name) as im:
            assert im.mode == "RGB" and im.size == (256, 256)
        fused = read_image(out / name)
        pet = read_image(b / name)
        mri = read_image(a / name)
        assert pet.is_colour and not mri.is_colour
        _, cb_f, cr_f = rgb_to_ycbcr(fused.pixels)
        y_p, cb_p, cr_p = rgb_to_ycbcr(pet.pixels)
        assert np.abs(cb_f - cb_p).max() <= CHROMA_TOL
        assert np.abs(cr_f - cr_p).max() <= CHROMA_TOL
        # max rule on luminance: never darker than either source (bar gamut limiting/rounding)
        y_f = rgb_to_ycbcr(fused.pixels)[0]
        assert np.mean(y_f >= np.maximum(mri.pixels, y_p) - 2 / 255) > 0.95
    assert (out / "fuse_args.json").is_file()


@pytest.mark.realdata
def test_mri_ct_grey_pairs_exact_max(harvard_dir, tmp_path):
    a, b = _copy_pairs(harvard_dir / "MRI_CT", ["11.png"], tmp_path)
    out = tmp_path / "out"
    assert (
        main(["fuse", "-a", str(a), "-b", str(b), "-o", str(out), "--rule", "max", "--no-progress"])
        == 0
    )
    with Image.open(out / "11.png") as im:
        assert im.mode == "L"
        got = np.asarray(im)
    src_a = np.asarray(Image.open(a / "11.png").convert("L"))
    src_b = np.asarray(Image.open(b / "11.png").convert("L"))
    np.testing.assert_array_equal(got, np.maximum(src_a, src_b))


def test_grey_16bit_pair_and_rules(tmp_path):
    rng = np.random.default_rng(0)
    a16 = rng.integers(0, 65536, (20, 30)).astype(np.uint16)
    b16 = rng.integers(0, 65536, (20, 30)).astype(np.uint16)
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    Image.fromarray(a16).save(tmp_path / "A" / "p.png")
    Image.fromarray(b16).save(tmp_path / "B" / "p.tif")  # stems pair across suffixes
    for rule in ("average", "laplacian", "dwt", "pca"):
        out = tmp_path / rule
        assert (
            main(
                [
                    "fuse",
                    "-a",
                    str(tmp_path / "A"),
                    "-b",
                    str(tmp_path / "B"),
                    "-o",
                    str(out),
                    "--rule",
                    rule,
                    "--no-progress",
                ]
            )
            == 0
        )
        img = read_image(out / "p.png")
        assert img.bit_depth == 16 and img.size == (20, 30)
    avg = np.asarray(Image.open(tmp_path / "average" / "p.png"))
    expect = np.rint((a16.astype(np.float64) + b16) / 2)
    assert np.abs(avg.astype(np.float64) - expect).max() <= 1


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_bad_pairs_are_reported_and_the_rest_continue(tmp_path, capsys):
    rng = np.random.default_rng(1)
    a, b, out = tmp_path / "A", tmp_path / "B", tmp_path / "out"
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    colour = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    _write(a / "good.png", grey)
    _write(b / "good.png", colour)
    _write(a / "size.png", grey)
    _write(b / "size.png", rng.integers(0, 256, (16, 18), dtype=np.uint8))
    _write(a / "both.png", colour)
    _write(b / "both.png", colour[::-1].copy())
    _write(a / "lonely.png", grey)
    _write(a / "corrupt.png", grey)
    (b / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rc = main(
        ["fuse", "-a", str(a), "-b", str(b), "-o", str(out), "--rule", "average", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert sorted(p.name for p in out.iterdir()) == ["fuse_args.json", "good.png"]
    lines = [ln for ln in err.splitlines() if ln.startswith("FAILED")]
    assert len(lines) == 4
    joined = "\n".join(lines)
    assert f"size.png: size 16x16 differs from {b / 'size.png'} (16x18)" in joined
    assert "both.png: both this image and" in joined
    assert "lonely.png: no file named lonely.*" in joined
    assert "corrupt.png: cannot read image" in joined
    assert "1 pairs done, 0 skipped, 4 failed" in err
    # existing outputs are kept unless --overwrite
    before = (out / "good.png").stat().st_mtime_ns
    rc = main(
        ["fuse", "-a", str(a), "-b", str(b), "-o", str(out), "--rule", "max", "--no-progress"]
    )
    assert "skipped good:" in capsys.readouterr().out
    assert (out / "good.png").stat().st_mtime_ns == before


def test_pairing_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        pair_files(tmp_path / "empty", tmp_path / "empty")
    with pytest.raises(InputError, match="not a folder"):
        pair_files(tmp_path / "nope", tmp_path / "empty")
    assert (
        main(
            [
                "fuse",
                "-a",
                str(tmp_path / "nope"),
                "-b",
                str(tmp_path),
                "-o",
                str(tmp_path / "o"),
                "--rule",
                "max",
            ]
        )
        == 2
    )


def test_fuse_images_grey_output_depth():
    from fuse4seg.inference.image_io import Image2D

    a = Image2D(np.full((4, 4), 0.2, np.float32), 8, Path("a.png"))
    b = Image2D(np.full((4, 4), 0.6, np.float32), 16, Path("b.png"))
    fused = fuse_images(a, b, rule_fuser("average"))
    assert fused.bit_depth == 16 and not fused.is_colour
    np.testing.assert_allclose(fused.pixels, 0.4, atol=1e-6)


def test_model_fusion_and_model_errors(tmp_path, trained_model_file, capsys):
    import torch

    from fuse4seg.models import create_seg_net
    from fuse4seg.models.model_file import FusionSegModel, save_model_file

    rng = np.random.default_rng(2)
    a, b = tmp_path / "A", tmp_path / "B"
    _write(a / "x.png", rng.integers(0, 256, (30, 26), dtype=np.uint8))
    _write(b / "x.png", rng.integers(0, 256, (30, 26, 3), dtype=np.uint8))
    out = tmp_path / "out"
    # the model was trained on BraTS t1ce / flair: fusing other pairs works but is flagged
    with pytest.warns(InputWarning, match="outside its training domain"):
        rc = main(
            [
                "fuse",
                "-a",
                str(a),
                "-b",
                str(b),
                "-o",
                str(out),
                "-m",
                str(trained_model_file),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
    assert rc == 0
    assert read_image(out / "x.png").pixels.shape == (30, 26, 3)
    torch.manual_seed(0)
    multichannel = FusionSegModel("multichannel", ["t1ce", "flair"], create_seg_net("tiny", 2))
    save_model_file(multichannel, tmp_path / "mc.pt")
    three = FusionSegModel(
        "average", ["t1", "t1ce", "flair"], create_seg_net("tiny", 1), fusion_rule="average"
    )
    save_model_file(three, tmp_path / "three.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    truncated = trained_model_file.read_bytes()[:2000]
    (tmp_path / "trunc.pt").write_bytes(truncated)
    for name, message in [
        ("mc.pt", "produces no fused image"),
        ("three.pt", "needs a model trained on 2 modalities, this one takes 3"),
        ("junk.pt", "not a readable model file"),
        ("trunc.pt", "not a readable model file"),
        ("missing.pt", "model file not found"),
    ]:
        rc = main(
            [
                "fuse",
                "-a",
                str(a),
                "-b",
                str(b),
                "-o",
                str(tmp_path / f"out_{name}"),
                "-m",
                str(tmp_path / name),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        err = capsys.readouterr().err
        assert rc == 2
        assert err.startswith(f"error: {tmp_path / name}: ") and message in err, err
        assert err.count("\n") == 1
        assert not (tmp_path / name / "x.png").exists()
