"""Attention maps of the cross-attention fusion as images (interpretability, paper 001).

The attention matrix ``(B, heads, N_q, N_k)`` of :class:`~fuse4seg.v1.FusionNetV1` says, for
every query token of modality 1, how its attended embedding mixes the key tokens of
modality 2. Two views are saved:

* **key importance** ``(B, heads, g_h, g_w)``: the mean over queries of the attention,
  i.e. how much each region of modality 2 contributes to the fused embedding (sums to one
  over the grid for every head) — written per head and averaged over heads;
* an overlay of the head-averaged key importance on the fused image.

PNG files are written next to the fused output as ``<stem>_attention_head<k>.png``,
``<stem>_attention_mean.png`` and ``<stem>_attention_overlay.png`` (atomic writes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fuse4seg.io.atomic import atomic_path

__all__ = [
    "key_importance",
    "attention_heatmap",
    "save_attention_maps",
    "fuse_with_attention",
    "attention_report_png",
]


def key_importance(attention: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Mean attention received by each key token: ``(B, heads, N_q, N_k) -> (B, heads, g_h, g_w)``.

    Each ``(g_h, g_w)`` map sums to one (rows of the attention sum to one over keys).
    """
    if attention.ndim != 4 or attention.shape[-1] != grid[0] * grid[1]:
        raise ValueError(
            f"attention must be (B, heads, N_q, N_k) with N_k = {grid[0]}*{grid[1]}, "
            f"got {tuple(attention.shape)}"
        )
    b, h = attention.shape[:2]
    return attention.mean(dim=2).reshape(b, h, *grid)


def attention_heatmap(grid_map: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(g_h, g_w)`` map -> ``(H, W)`` float32 in [0, 1] (bilinear upsampling, min-max scaled;
    a constant map gives zeros)."""
    m = grid_map.detach().float()[None, None]
    up = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
    lo, hi = float(up.min()), float(up.max())
    return (
        np.zeros(size, np.float32)
        if hi - lo < 1e-12
        else ((up - lo) / (hi - lo)).astype(np.float32)
    )


def _colour(heat: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["jet"](heat)[..., :3] * 255).round().astype(np.uint8)  # (H, W, 3)


def _write_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def save_attention_maps(
    attention: torch.Tensor,
    grid: tuple[int, int],
    fused_path: str | Path,
    image_size: tuple[int, int],
    fused: np.ndarray | torch.Tensor | None = None,
    alpha: float = 0.45,
) -> list[Path]:
    """Save the attention of one sample as PNGs next to ``fused_path``.

    Args:
        attention: ``(1, heads, N_q, N_k)`` or ``(heads, N_q, N_k)``.
        grid: token grid ``(g_h, g_w)``.
        fused_path: the fused output file; maps go to its folder, named after its stem.
        image_size: ``(H, W)`` of the fused image.
        fused: optional ``(H, W)`` fused image in [0, 1] for the overlay.
        alpha: heat-map opacity of the overlay.

    Returns:
        The written paths (per head, mean, and overlay if ``fused`` is given).
    """
    if attention.ndim == 3:
        attention = attention[None]
    if attention.shape[0] != 1:
        raise ValueError(f"save one sample at a time, got batch {attention.shape[0]}")
    fused_path = Path(fused_path)
    stem = fused_path.name.split(".")[0]
    maps = key_importance(attention, grid)[0]  # (heads, g_h, g_w)
    written = []
    for k in range(maps.shape[0]):
        path = fused_path.with_name(f"{stem}_attention_head{k}.png")
        _write_png(_colour(attention_heatmap(maps[k], image_size)), path)
        written.append(path)
    mean_heat = attention_heatmap(maps.mean(0), image_size)
    path = fused_path.with_name(f"{stem}_attention_mean.png")
    _write_png(_colour(mean_heat), path)
    written.append(path)
    if fused is not None:
        base = torch.as_tensor(fused).detach().float().cpu().numpy().squeeze()
        if base.shape != tuple(image_size):
            raise ValueError(f"fused image {base.shape} does not match image_size {image_size}")
        grey = np.repeat((np.clip(base, 0, 1) * 255)[..., None], 3, axis=2)
        over = (1 - alpha) * grey + alpha * _colour(mean_heat).astype(np.float64)
        path = fused_path.with_name(f"{stem}_attention_overlay.png")
        _write_png(over.round().clip(0, 255).astype(np.uint8), path)
        written.append(path)
    return written


@torch.no_grad()
def fuse_with_attention(
    fusion_net: torch.nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Run a :class:`FusionNetV1` on ``x (B, 2, H, W)``: ``(fused (B, 1, H, W), attention
    (B, heads, N_q, N_k), grid)``. Raises ``ValueError`` for networks without attention."""
    out = fusion_net(x)
    if not hasattr(out, "attention"):
        raise ValueError(f"{type(fusion_net).__name__} returns no attention maps (not a v1 model)")
    if out.attention is None:
        raise ValueError("this fuse4seg-v1 network was trained without cross-attention")
    return out.fused, out.attention, out.attention_grid


def attention_report_png(
    sources: torch.Tensor,
    fused: torch.Tensor,
    attention: torch.Tensor,
    grid: tuple[int, int],
    path: str | Path,
    names: tuple[str, str] = ("M1", "M2"),
) -> Path:
    """One-row figure for reports: M1 | M2 | fused | attention overlay on M2.

    Args:
        sources: ``(2, H, W)``; fused: ``(H, W)`` or ``(1, H, W)``; attention
            ``(heads, N_q, N_k)`` or ``(1, heads, N_q, N_k)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if attention.ndim == 3:
        attention = attention[None]
    src = sources.detach().float().cpu().numpy()
    fu = fused.detach().float().cpu().numpy().squeeze()
    heat = attention_heatmap(key_importance(attention, grid)[0].mean(0), fu.shape)
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    panels = [(src[0], names[0]), (src[1], names[1]), (fu, "fused")]
    for ax, (img, title) in zip(axes, panels, strict=False):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
    axes[3].imshow(src[1], cmap="gray", vmin=0, vmax=1)
    axes[3].imshow(heat, cmap="jet", alpha=0.45)
    axes[3].set_title(f"attention on {names[1]}")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
