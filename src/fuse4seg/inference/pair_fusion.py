"""Fusion of co-registered 2D image pairs (MRI-CT, MRI-PET, MRI-SPECT), grey or colour.

A *fuser* is any callable mapping sources ``(B, 2, H, W)`` in ``[0, 1]`` to a fused image
``(B, 1, H, W)`` in ``[0, 1]``: a classical rule (:func:`rule_fuser`) or the fusion network
of a trained model (:func:`model_fuser`).

Colour handling: when one source is colour (pseudo-colour PET/SPECT), its luminance ``Y``
(BT.601 YCbCr) is fused with the grey source and its ``Cb, Cr`` are put back, giving an RGB
image. By default ``Y`` is limited per pixel so that the output chroma equals the colour
source's exactly (``gamut="preserve-chroma"``); ``gamut="clip"`` clips R, G, B instead, like
OpenCV and the CDDFuse reference code. Grey pairs give a grey image at the inputs' bit depth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fuse4seg.errors import InputError
from fuse4seg.fusion_rules import get_fusion_rule
from fuse4seg.inference.image_io import (
    Image2D,
    image_stem,
    is_image_file,
    read_image,
    rgb_to_ycbcr,
    write_grey_png,
    write_rgb_png,
    ycbcr_to_rgb,
    ycbcr_to_rgb_preserving_chroma,
)
from fuse4seg.models import crop_to, zero_pad_to_multiple

__all__ = [
    "GAMUT_MODES",
    "Fuser",
    "FusedImage",
    "PairListing",
    "rule_fuser",
    "model_fuser",
    "fuse_images",
    "fuse_pair_files",
    "pair_files",
    "write_fused",
]

Fuser = Callable[[torch.Tensor], torch.Tensor]
#: ways to go back from fused Y + source chroma to RGB.
GAMUT_MODES = ("preserve-chroma", "clip")


@dataclass
class FusedImage:
    """A fused image: ``pixels`` ``(H, W)`` grey or ``(H, W, 3)`` RGB in ``[0, 1]``."""

    pixels: np.ndarray
    bit_depth: int

    @property
    def is_colour(self) -> bool:
        return self.pixels.ndim == 3


def rule_fuser(name: str) -> Fuser:
    """A fuser applying the classical rule ``name`` (see :mod:`fuse4seg.fusion_rules`)."""
    return get_fusion_rule(name)


def model_fuser(
    model: torch.nn.Module,
    device: torch.device | str = "cpu",
    model_path: str | Path | None = None,
    pad_multiple: int = 1,
    attention_sink: Callable[[torch.Tensor, tuple[int, int], torch.Tensor], None] | None = None,
) -> Fuser:
    """A fuser running the fusion network of a trained fuse4seg model.

    The model must take exactly 2 modalities and produce a fused image; its first modality
    receives source A, the second source B. Inputs are zero-padded to ``pad_multiple``
    (default 1: the fuse4seg networks pad internally).

    ``attention_sink(attention (B, heads, N_q, N_k), grid, fused (B, 1, H, W))`` is called
    with the cross-attention maps of each fused batch; only models whose fusion network returns
    attention (``fuse4seg-v1``) have them.

    Raises:
        InputError: the model takes another number of modalities, has no fused image, or
            has no attention maps while ``attention_sink`` is given.
    """
    modalities = list(getattr(model, "modalities", []))
    if len(modalities) != 2:
        raise InputError(
            model_path,
            f"pair fusion needs a model trained on 2 modalities, this one takes "
            f"{len(modalities)} ({', '.join(modalities) or 'unknown'})",
        )
    if getattr(model, "spatial_dims", 2) != 2:
        raise InputError(model_path, "pair fusion needs a 2D model (spatial_dims == 2)")
    device = torch.device(device)
    model = model.to(device).eval()
    fusion_net = getattr(model, "fusion_net", None)
    if attention_sink is not None and not hasattr(fusion_net, "cross_attention"):
        raise InputError(
            model_path,
            f"method {getattr(model, 'method', '?')!r} has no attention maps "
            "(--save-attention needs a fuse4seg-v1 model)",
        )

    @torch.inference_mode()
    def fuse(x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        xp = zero_pad_to_multiple(x.to(device, torch.float32), pad_multiple)
        if attention_sink is not None:
            from fuse4seg.v1.attention_maps import fuse_with_attention

            out, attention, grid = fuse_with_attention(model.fusion_net, xp)
            attention_sink(attention.cpu(), grid, crop_to(out.float(), size).cpu())
        else:
            out = model.fuse(xp)
        if out is None:
            raise InputError(
                model_path, f"method {getattr(model, 'method', '?')!r} produces no fused image"
            )
        return crop_to(out.float(), size).clamp(0.0, 1.0).cpu()

    # Fail early (before any pair) for a model without a fused image.
    fuse(torch.zeros(1, 2, 32, 32))
    return fuse


def fuse_images(a: Image2D, b: Image2D, fuser: Fuser, gamut: str = "preserve-chroma") -> FusedImage:
    """Fuse two co-registered images.

    Args:
        a, b: the sources (``a`` goes to modality 0, ``b`` to modality 1).
        fuser: ``(1, 2, H, W) -> (1, 1, H, W)``.
        gamut: ``"preserve-chroma"`` (default) or ``"clip"``, see the module docstring.

    Returns:
        RGB when one source is colour, else grey at ``max(a.bit_depth, b.bit_depth)``.

    Raises:
        InputError: different sizes, or both sources in colour.
    """
    if gamut not in GAMUT_MODES:
        raise ValueError(f"gamut must be one of {GAMUT_MODES}, got {gamut!r}")
    if a.size != b.size:
        raise InputError(
            a.path,
            f"size {a.size[0]}x{a.size[1]} differs from {b.path} ({b.size[0]}x{b.size[1]}); "
            "images must be co-registered and the same size",
        )
    if a.is_colour and b.is_colour:
        raise InputError(
            a.path, f"both this image and {b.path} are colour; at most one source may be colour"
        )
    colour = a if a.is_colour else b if b.is_colour else None
    if colour is None:
        ya, yb = a.pixels, b.pixels
    else:
        y, cb, cr = rgb_to_ycbcr(colour.pixels)
        ya, yb = (y, b.pixels) if colour is a else (a.pixels, y)
    x = torch.from_numpy(np.stack([ya, yb])[None].astype(np.float32))  # (1, 2, H, W)
    fused = fuser(x)
    if tuple(fused.shape) != (1, 1, *a.size):
        raise RuntimeError(f"fuser returned shape {tuple(fused.shape)}, expected (1, 1, {a.size})")
    fy = fused[0, 0].detach().cpu().float().numpy().clip(0.0, 1.0)
    if colour is None:
        return FusedImage(pixels=fy, bit_depth=max(a.bit_depth, b.bit_depth))
    to_rgb = ycbcr_to_rgb_preserving_chroma if gamut == "preserve-chroma" else ycbcr_to_rgb
    return FusedImage(pixels=to_rgb(fy, cb, cr), bit_depth=8)


def write_fused(path: str | Path, fused: FusedImage) -> None:
    """Write a fused image as PNG (RGB 8-bit, or grey at its bit depth), atomically."""
    if fused.is_colour:
        write_rgb_png(path, fused.pixels)
    else:
        write_grey_png(path, fused.pixels, fused.bit_depth)


def fuse_pair_files(
    path_a: str | Path,
    path_b: str | Path,
    out_path: str | Path,
    fuser: Fuser,
    gamut: str = "preserve-chroma",
) -> FusedImage:
    """Read two files, fuse them and write ``out_path`` (PNG) atomically."""
    fused = fuse_images(read_image(path_a), read_image(path_b), fuser, gamut=gamut)
    write_fused(out_path, fused)
    return fused


@dataclass
class PairListing:
    """Files of two folders paired by stem.

    Attributes:
        pairs: ``(stem, path_a, path_b)`` sorted by stem.
        problems: ``(name, message)`` for files without a partner or with an ambiguous stem.
    """

    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _index(folder: Path, problems: list[tuple[str, str]]) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    by_stem: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if is_image_file(p):
            by_stem.setdefault(image_stem(p), []).append(p)
    if not by_stem:
        raise InputError(folder, "no image files (PNG/JPG/TIFF/NIfTI) found")
    out = {}
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            problems.append((stem, f"{folder}: several files share the name {stem!r} ({names})"))
        else:
            out[stem] = paths[0]
    return out


def pair_files(dir_a: str | Path, dir_b: str | Path) -> PairListing:
    """Pair the image files of ``dir_a`` and ``dir_b`` by file stem (suffixes may differ).

    Raises:
        InputError: a folder is missing or has no image file.
    """
    dir_a, dir_b = Path(dir_a), Path(dir_b)
    listing = PairListing()
    idx_a = _index(dir_a, listing.problems)
    idx_b = _index(dir_b, listing.problems)
    for stem in sorted(set(idx_a) | set(idx_b)):
        if stem in idx_a and stem in idx_b:
            listing.pairs.append((stem, idx_a[stem], idx_b[stem]))
        elif stem in idx_a:
            listing.problems.append((stem, f"{idx_a[stem]}: no file named {stem}.* in {dir_b}"))
        else:
            listing.problems.append((stem, f"{idx_b[stem]}: no file named {stem}.* in {dir_a}"))
    return listing
