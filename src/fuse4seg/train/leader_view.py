"""The glass-box view of a trained leader: what it takes from which modality, and how much
tumour contrast its fused image keeps.

* :func:`class_contrast` measures, on one volume, how far apart the fused intensities of
  healthy brain, NCR, ED and ET lie (in standard deviations of the brain's intensities), for
  the fused image or any other single-channel input (``x_avg``), so methods can be compared;
* :func:`plot_leader_view` draws, for one slice, the sources, the fused image, the leader's
  weight maps (``output_mode="weights"``) and its per-pixel transfer function (a 2D lookup
  image for two modalities, with the class centroids of the slice marked on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CLASS_NAMES", "class_contrast", "plot_leader_view"]

#: canonical label -> name of the classes compared by :func:`class_contrast`
CLASS_NAMES: dict[int, str] = {0: "healthy", 1: "NCR", 2: "ED", 3: "ET"}


def class_contrast(image: np.ndarray, labels: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """Class separation of a single-channel image ``(D, H, W)`` (or ``(H, W)``).

    Intensities are standardised over the ``brain`` mask (zero mean, unit sd). Returns, for
    NCR, ED and ET, ``<class>_vs_healthy``: the class mean minus the healthy-brain mean, and
    for every pair of the four classes ``d_<a>_<b>``: ``|mean_a - mean_b| / pooled sd``
    (Cohen's d; larger = easier to tell apart from intensity alone). NaN where a class is
    absent.
    """
    image, labels, brain = np.asarray(image), np.asarray(labels), np.asarray(brain, bool)
    if image.shape != labels.shape or image.shape != brain.shape:
        raise ValueError(
            f"image, labels and brain need one shape, got {image.shape}, {labels.shape}, "
            f"{brain.shape}"
        )
    values = image[brain].astype(np.float64)
    if values.size == 0:
        raise ValueError("the brain mask is empty")
    z = (image.astype(np.float64) - values.mean()) / (values.std() + 1e-12)
    groups = {}
    for lab, name in CLASS_NAMES.items():
        sel = brain & (labels == lab) if lab == 0 else labels == lab
        groups[name] = z[sel] if sel.any() else None
    out: dict[str, float] = {}
    healthy = groups["healthy"]
    for name in ("NCR", "ED", "ET"):
        g = groups[name]
        out[f"{name}_vs_healthy"] = (
            float(g.mean() - healthy.mean()) if g is not None and healthy is not None else np.nan
        )
    names = list(CLASS_NAMES.values())
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ga, gb = groups[a], groups[b]
            if ga is None or gb is None:
                out[f"d_{a}_{b}"] = np.nan
                continue
            pooled = np.sqrt(0.5 * (ga.var() + gb.var())) + 1e-12
            out[f"d_{a}_{b}"] = float(abs(ga.mean() - gb.mean()) / pooled)
    return out


@torch.no_grad()
def plot_leader_view(
    fusion_net: torch.nn.Module,
    x: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    modalities: Sequence[str],
    out_png: str | Path,
    title: str = "",
) -> dict[str, Any]:
    """Draw the leader's view of one slice ``x (M, H, W)`` with its labels ``(H, W)``.

    Panels: each source, the fused image, one weight map per modality (leaders with
    ``output_mode="weights"``), and the transfer-function lookup for two modalities (leaders
    with ``transfer_hidden > 0``; axes = the two sources' intensities, the dots = mean source
    intensities of NCR / ED / ET / healthy brain in this slice). Returns the arrays drawn.
    """
    from fuse4seg.train.report import LABEL_COLOURS, _plt, _save_figure

    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))[None]  # (1, M, H, W)
    p = next(fusion_net.parameters())
    xt = xt.to(p.device)
    was_training = fusion_net.training
    fusion_net.eval()
    fused = fusion_net(xt).fused[0, 0].float().cpu().numpy()
    cfg = getattr(fusion_net, "config", None)
    weights = None
    if getattr(cfg, "output_mode", None) == "weights":
        weights = fusion_net.weight_maps(xt)[0].float().cpu().numpy()  # (M, H, W)
    transfer = getattr(fusion_net, "transfer", None)
    lookup = None
    if transfer is not None and xt.shape[1] == 2:
        lookup = transfer.lookup(64).float().cpu().numpy()  # (64, 64)
    fusion_net.train(was_training)

    xs = xt[0].cpu().numpy()
    labels = np.asarray(labels)
    panels = len(modalities) + 1 + (0 if weights is None else len(modalities))
    panels += 0 if lookup is None else 1
    plt = _plt()
    fig, axes = plt.subplots(1, panels, figsize=(2.4 * panels, 2.6), squeeze=False)
    axes = list(axes[0])

    def image_panel(image: np.ndarray, name: str, **kwargs: Any) -> Any:
        ax = axes.pop(0)
        im = ax.imshow(image, **kwargs)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        return ax, im

    for m, name in enumerate(modalities):
        image_panel(xs[m], name, cmap="gray", vmin=0, vmax=1)
    image_panel(fused, "fused", cmap="gray", vmin=0, vmax=1)
    if weights is not None:
        lim = max(1.0, float(np.abs(weights).max()))
        for m, name in enumerate(modalities):
            ax, im = image_panel(
                weights[m], f"weight of {name}", cmap="RdBu_r", vmin=-lim, vmax=lim
            )
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if lookup is not None:
        ax = axes.pop(0)
        im = ax.imshow(lookup, origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
        ax.set_xlabel(modalities[1], fontsize=8)
        ax.set_ylabel(modalities[0], fontsize=8)
        ax.set_title("transfer t(x)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        brain = xs.max(axis=0) > 0
        for lab, name in CLASS_NAMES.items():
            sel = brain & (labels == lab)
            if sel.any():
                colour = LABEL_COLOURS.get(lab, (1.0, 1.0, 1.0))
                ax.scatter(
                    xs[1][sel].mean(), xs[0][sel].mean(), s=30, color=colour,
                    edgecolors="black", label=name,
                )  # fmt: skip
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save_figure(fig, out_png)
    return {"fused": fused, "weights": weights, "lookup": lookup}
