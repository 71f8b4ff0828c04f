"""Reading images as the reference evaluator does (``image_reading.py``): plain 8-bit PNG files
decoded without Pillow give Pillow's pixels, and every other file still goes to Pillow."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fuse4seg.errors import InputError
from fuse4seg.metrics import _kernels, read_gray_reference
from fuse4seg.metrics.image_reading import _decode_plain_png

needs_kernels = pytest.mark.skipif(not _kernels.available(), reason="Numba not installed")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter_row(row: np.ndarray, up: np.ndarray, bpp: int, kind: int) -> bytes:
    """One row of 8-bit samples filtered with PNG filter ``kind`` (the specification's rules)."""
    x = row.astype(int)
    b = up.astype(int)
    a = np.concatenate([np.zeros(bpp, int), x[:-bpp]])
    c = np.concatenate([np.zeros(bpp, int), b[:-bpp]])
    pred = {
        0: np.zeros_like(x),
        1: a,
        2: b,
        3: (a + b) // 2,
        4: np.array([_paeth(*t) for t in zip(a, b, c, strict=True)], int),
    }[kind]
    return bytes([kind]) + ((x - pred) % 256).astype(np.uint8).tobytes()


def _png_file(raw: bytes, w: int, h: int, colour: int, interlace: int = 0, extra=()) -> bytes:
    """A PNG file of 8-bit samples from its filtered rows ``raw`` (IHDR, ``extra``, IDAT)."""
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, interlace)
    body = _chunk(b"IHDR", header) + b"".join(extra) + _chunk(b"IDAT", zlib.compress(raw))
    return b"\x89PNG\r\n\x1a\n" + body + _chunk(b"IEND", b"")


def _png(pixels: np.ndarray, kinds, interlace: int = 0, extra=()) -> bytes:
    """An 8-bit grey (H, W) or RGB (H, W, 3) PNG with the row filters ``kinds`` (cycled)."""
    h, w = pixels.shape[:2]
    bpp = 1 if pixels.ndim == 2 else 3
    rows = pixels.reshape(h, w * bpp)
    up = np.zeros(w * bpp, np.uint8)
    raw = b""
    for i in range(h):
        raw += _filter_row(rows[i], up, bpp, kinds[i % len(kinds)])
        up = rows[i]
    return _png_file(raw, w, h, 0 if bpp == 1 else 2, interlace, extra)


def _pillow(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im if im.mode == "L" else im.convert("RGB"))


@needs_kernels
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kinds", [[0], [1], [2], [3], [4], [4, 1, 3, 0, 2]])
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (16, 33)])
def test_png_row_filters_decode_as_pillow(monkeypatch, tmp_path, channels, kinds, shape):
    rng = np.random.default_rng(len(kinds) * 10 + kinds[0])
    pixels = rng.integers(0, 256, shape + ((3,) if channels == 3 else ()), dtype=np.uint8)
    path = tmp_path / "x.png"
    path.write_bytes(_png(pixels, kinds))
    got = _decode_plain_png(path)
    assert got is not None and got.dtype == np.uint8
    assert np.array_equal(got, pixels) and np.array_equal(got, _pillow(path))
    fast = read_gray_reference(path)
    monkeypatch.setenv("FUSE4SEG_METRICS_BACKEND", "torch")  # no kernels: Pillow reads it
    assert _decode_plain_png(path) is None
    assert np.array_equal(fast, read_gray_reference(path))


@needs_kernels
def test_real_pngs_decode_as_pillow(harvard_dir):
    paths = []
    for sub in ("MRI_PET/MRI", "MRI_PET/PET", "MRI_SPECT/SPECT", "MRI_CT/CT"):
        paths += sorted((harvard_dir / sub).glob("*.png"))[:3]
    assert paths
    for path in paths:
        got = _decode_plain_png(path)
        assert got is not None and np.array_equal(got, _pillow(path)), path


@needs_kernels
def test_other_pngs_go_to_pillow(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    files = {
        "palette": Image.fromarray(grey).convert("P"),
        "grey_alpha": Image.fromarray(grey).convert("LA"),
        "rgba": Image.fromarray(rgb).convert("RGBA"),
        "16bit": Image.fromarray(grey.astype(np.uint16) * 257),
    }
    for name, im in files.items():
        im.save(tmp_path / f"{name}.png")
    (tmp_path / "trns.png").write_bytes(_png(grey, [0], extra=(_chunk(b"tRNS", b"\0\7"),)))
    for path in sorted(tmp_path.glob("*.png")):
        assert _decode_plain_png(path) is None, path.name
        assert read_gray_reference(path).shape == (9, 11), path.name  # Pillow reads it
    assert np.array_equal(read_gray_reference(tmp_path / "trns.png"), grey)
    assert np.array_equal(read_gray_reference(tmp_path / "16bit.png"), grey)
    # interlaced (Adam7) data is not decoded here: the header alone sends it to Pillow
    (tmp_path / "adam7.png").write_bytes(_png(grey, [0], interlace=1))
    assert _decode_plain_png(tmp_path / "adam7.png") is None


@needs_kernels
def test_damaged_pngs_are_left_to_pillow(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    good = _png(grey, [4])
    bad_crc = bytearray(good)
    bad_crc[-20] ^= 1  # inside the IDAT chunk: its CRC no longer matches
    raw = b"".join(bytes([7 if i == 0 else 0]) + r.tobytes() for i, r in enumerate(grey))
    bad_filter = _png_file(raw, 8, 8, 0)  # filter type 7 does not exist
    short = _png_file(raw[:-1], 8, 8, 0)  # one byte of image data missing
    path = tmp_path / "d.png"
    for data in (bytes(bad_crc), good[:-30], bad_filter, short, good[:8]):
        path.write_bytes(data)
        assert _decode_plain_png(path) is None
    path.write_bytes(good[:-30])  # truncated: Pillow's error, naming the file
    with pytest.raises(InputError, match="d.png: cannot read image"):
        read_gray_reference(path)
