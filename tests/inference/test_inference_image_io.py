"""Image reading/writing and BT.601 YCbCr conversion."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from fuse4seg.errors import InputError
from fuse4seg.inference.image_io import (
    image_stem,
    read_image,
    rgb_to_ycbcr,
    write_grey_png,
    write_rgb_png,
    ycbcr_to_rgb,
    ycbcr_to_rgb_preserving_chroma,
)


def test_ycbcr_known_values_and_round_trip():
    y, cb, cr = rgb_to_ycbcr(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]]))
    # pure red: Y = 0.299, Cr = 0.713 * 0.701 + 0.5, Cb = 0.564 * -0.299 + 0.5
    np.testing.assert_allclose(y, [0.299, 0.114, 0.5], atol=1e-6)
    np.testing.assert_allclose(cr, [0.713 * 0.701 + 0.5, 0.713 * -0.114 + 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(cb, [0.564 * -0.299 + 0.5, 0.564 * 0.886 + 0.5, 0.5], atol=1e-6)
    rgb = np.random.default_rng(0).random((50, 40, 3)).astype(np.float32)
    back = ycbcr_to_rgb(*rgb_to_ycbcr(rgb))
    # OpenCV's rounded inverse coefficients invert the forward transform to ~1e-3
    np.testing.assert_allclose(back, rgb, atol=2e-3)
    np.testing.assert_allclose(ycbcr_to_rgb_preserving_chroma(*rgb_to_ycbcr(rgb)), rgb, atol=2e-3)


def test_preserving_chroma_keeps_cb_cr_when_y_changes():
    rng = np.random.default_rng(1)
    rgb = rng.random((64, 64, 3)).astype(np.float32)
    _, cb, cr = rgb_to_ycbcr(rgb)
    new_y = rng.random((64, 64)).astype(np.float32)  # many pixels pushed out of gamut
    out = ycbcr_to_rgb_preserving_chroma(new_y, cb, cr)
    assert out.min() >= 0.0 and out.max() <= 1.0
    _, cb2, cr2 = rgb_to_ycbcr(out)
    np.testing.assert_allclose(cb2, cb, atol=1e-3)
    np.testing.assert_allclose(cr2, cr, atol=1e-3)
    clipped = ycbcr_to_rgb(new_y, cb, cr)
    assert np.abs(rgb_to_ycbcr(clipped)[2] - cr).max() > 0.05  # plain clipping shifts chroma
    inside = np.all((clipped > 0) & (clipped < 1), axis=-1)  # Y in gamut: both agree
    assert inside.mean() > 0.2
    np.testing.assert_allclose(out[inside], clipped[inside], atol=1e-5)


@pytest.mark.parametrize("bits", [8, 16])
def test_grey_png_round_trip(tmp_path, bits):
    full = 255 if bits == 8 else 65535
    levels = np.random.default_rng(2).integers(0, full + 1, (13, 17))
    write_grey_png(tmp_path / "g.png", levels / full, bits)
    img = read_image(tmp_path / "g.png")
    assert img.bit_depth == bits and not img.is_colour and img.size == (13, 17)
    np.testing.assert_array_equal(np.rint(img.pixels * full).astype(int), levels)


def test_rgb_png_and_grey_stored_as_rgb(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (8, 9, 3)).astype(np.uint8)
    write_rgb_png(tmp_path / "c.png", rgb / 255.0)
    img = read_image(tmp_path / "c.png")
    assert img.is_colour and img.bit_depth == 8
    np.testing.assert_array_equal(np.rint(img.pixels * 255).astype(np.uint8), rgb)
    grey = np.repeat(rgb[..., :1], 3, axis=2)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").pixels.shape == (8, 9)
    Image.fromarray(np.dstack([rgb, np.full((8, 9), 255, np.uint8)])).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png").pixels, img.pixels)


def test_tiff_jpeg_and_nifti(tmp_path):
    arr16 = (np.arange(20 * 10).reshape(20, 10) * 300).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "t.tif")
    tif = read_image(tmp_path / "t.tif")
    assert tif.bit_depth == 16
    np.testing.assert_allclose(tif.pixels * 65535, arr16, atol=0.01)
    Image.fromarray((arr16 // 256).astype(np.uint8)).save(tmp_path / "j.jpg", quality=95)
    assert read_image(tmp_path / "j.jpg").size == (20, 10)
    # NIfTI (X, Y) is read as rows = Y, columns = X
    nib.save(nib.Nifti1Image(arr16.T.copy(), np.eye(4)), tmp_path / "n.nii.gz")
    nii = read_image(tmp_path / "n.nii.gz")
    assert nii.size == (20, 10) and nii.bit_depth == 16
    np.testing.assert_allclose(nii.pixels * 65535, arr16, atol=0.01)
    assert image_stem(tmp_path / "n.nii.gz") == "n" and image_stem("x.y.png") == "x.y"


def test_bad_images_name_the_file(tmp_path):
    with pytest.raises(InputError, match=r"missing\.png: file not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match=r"bad\.png: cannot read image"):
        read_image(tmp_path / "bad.png")
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(InputError, match=r"v\.nii\.gz: expected a 2D NIfTI image"):
        read_image(tmp_path / "v.nii.gz")
    nan = np.ones((6, 6), np.float32)
    nan[2, 2] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(InputError, match=r"nan\.nii: image contains NaN"):
        read_image(tmp_path / "nan.nii")
    data = gzip.compress(b"x" * 1000)[:30]
    (tmp_path / "trunc.nii.gz").write_bytes(data)
    with pytest.raises(InputError, match=r"trunc\.nii\.gz: cannot read NIfTI"):
        read_image(tmp_path / "trunc.nii.gz")
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(InputError, match="unsupported image type"):
        read_image(tmp_path / "x.bmp")
