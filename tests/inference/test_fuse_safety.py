"""``fuse4seg fuse`` never writes into its sources, and a bad pair fails alone (issue 14)."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fuse4seg.cli.main import main


@pytest.fixture
def pairs(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    a, b = tmp_path / "MRI", tmp_path / "PET"
    for folder in (a, b):
        folder.mkdir()
        for name in ("p1", "p2", "p3"):
            Image.fromarray(rng.integers(0, 256, (24, 20), dtype=np.uint8)).save(
                folder / f"{name}.png"
            )
    return a, b


def _fuse(a: Path, b: Path, out: Path, *extra: str) -> int:
    args = ["fuse", "-a", str(a), "-b", str(b), "-o", str(out), "--rule", "average"]
    return main([*args, "--no-progress", *extra])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("target", ["MRI", "PET", "MRI/fused", "PET/x/y"])
def test_output_in_a_source_folder_is_refused(pairs, capsys, target, overwrite):
    a, b = pairs
    before = (_snapshot(a), _snapshot(b))
    out = a.parent / target
    rc = _fuse(a, b, out, *(["--overwrite"] if overwrite else []))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {out}: is ") and err.count("\n") == 1, err
    assert (_snapshot(a), _snapshot(b)) == before
    assert not (a / "fused").exists() and not (b / "x").exists()


def test_decompression_bomb_fails_that_pair_only(pairs, tmp_path, capsys, monkeypatch):
    a, b = pairs
    big = np.zeros((200, 300), np.uint8)  # "huge" against the lowered pixel limit
    Image.fromarray(big).save(a / "p2.png")
    Image.fromarray(big).save(b / "p2.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 60000 > 2 x limit: an error
    out = tmp_path / "out"
    assert _fuse(a, b, out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    failed = [ln for ln in err.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith("FAILED p2: ")
    assert "image too large" in failed[0] and "MAX_IMAGE_PIXELS is 10000" in failed[0]
    assert "2 pairs done, 0 skipped, 1 failed" in err
    assert (out / "p1.png").is_file() and (out / "p3.png").is_file()


def test_crafted_png_header_is_refused_before_decoding(tmp_path):
    """A 15000 x 15000 PNG whose file is a few bytes: refused from its header."""
    import struct
    import zlib

    from fuse4seg.errors import InputError
    from fuse4seg.inference.image_io import read_image

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 15000, 15000, 8, 0, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + (chunk(b"IEND", b""))
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    with pytest.raises(InputError, match="image too large"):
        read_image(path)


def test_memory_error_fails_that_pair_only(pairs, tmp_path, capsys, monkeypatch):
    import fuse4seg.inference.pair_fusion as pf

    real = pf.read_image

    def read_image(path):
        if Path(path).stem == "p1":
            raise MemoryError
        return real(path)

    monkeypatch.setattr(pf, "read_image", read_image)
    out = tmp_path / "out"
    assert _fuse(*pairs, out) == 2
    err = capsys.readouterr().err
    assert "FAILED p1: " in err and "out of memory" in err
    assert "2 pairs done, 0 skipped, 1 failed" in err


def test_disk_full_stops_the_batch(pairs, tmp_path, capsys, monkeypatch):
    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    out = tmp_path / "out"
    assert _fuse(*pairs, out) == 2
    err = capsys.readouterr().err
    assert "FAILED p1: " in err and "no space left on device" in err
    assert "stopped: " in err and "2 pair(s) not run" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["fuse_args.json"]
