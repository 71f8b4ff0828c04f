"""Fusion-leader regularisers of Fuse4Seg (spec sec. 3.5.2), generalised to M modalities.

* :func:`decomposition_loss` — ``L_decomp = CC(F_high^i, F_high^j)^2 / (1.01 + CC(F_low^i,
  F_low^j))``, averaged over all modality pairs ``i < j``.
* :func:`gradient_loss` — ``L_grad = mean | |Sobel x_f| - max_m |Sobel x_m| |`` (L1), with the
  gradient magnitude of a named convention (``"unit"`` or ``"cddfuse"``, see
  :mod:`fuse4seg.losses.gradients`).
* :func:`reconstruction_loss` — ``L_recon = mean (x_f - mean_m x_m)^2`` (MSE anchor).

Not in the paper (anchors of ours, see docs/training.md): :func:`information_loss` (sources
recoverable from the fused value) and :func:`class_separation_loss` (label classes kept apart
in the fused intensities).
"""

from __future__ import annotations

import itertools

import torch

from .gradients import check_grad_convention, gradient_magnitude, sobel_magnitude

__all__ = [
    "class_contrasts",
    "class_separation_loss",
    "contrast_floor_loss",
    "correlation_coefficient",
    "decomposition_loss",
    "gradient_loss",
    "information_loss",
    "rarity_weights",
    "reconstruction_loss",
]


def correlation_coefficient(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation per (sample, channel) over the spatial axes, clamped to [-1, 1]
    and averaged (the CDDFuse convention).

    Args:
        a, b: ``(B, C, *S)`` with the same shape.

    Returns:
        Scalar tensor in [-1, 1].
    """
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.ndim < 3:
        raise ValueError(f"a must be (B, C, *S) with spatial axes, got shape {tuple(a.shape)}")
    a = a.flatten(2)  # (B, C, N)
    b = b.flatten(2)
    a = a - a.mean(dim=2, keepdim=True)
    b = b - b.mean(dim=2, keepdim=True)
    num = (a * b).sum(dim=2)
    # one square root of the product, eps^2 inside: finite gradients for a constant channel
    # (sqrt(0) has an infinite derivative, which turned a flat feature map into NaN weights)
    den = torch.sqrt(a.pow(2).sum(dim=2) * b.pow(2).sum(dim=2) + eps * eps)
    return (num / den).clamp(-1.0, 1.0).mean()


def decomposition_loss(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Correlation-driven decomposition loss averaged over modality pairs.

    Args:
        low: low-frequency features ``(B, M, C, *S)``.
        high: high-frequency features ``(B, M, C, *S)``.

    Returns:
        Scalar tensor. With ``M == 1`` there is no pair and the loss is 0 (still connected
        to the graph).
    """
    if low.ndim < 4 or high.ndim < 4:
        raise ValueError(
            f"low and high must be (B, M, C, *S), got {tuple(low.shape)} and {tuple(high.shape)}"
        )
    if low.shape[:2] != high.shape[:2]:
        raise ValueError(
            f"low and high must share (B, M), got {tuple(low.shape)} and {tuple(high.shape)}"
        )
    m = low.shape[1]
    if m < 2:
        return (low.sum() + high.sum()) * 0.0
    terms = []
    for i, j in itertools.combinations(range(m), 2):
        cc_high = correlation_coefficient(high[:, i], high[:, j])
        cc_low = correlation_coefficient(low[:, i], low[:, j])
        terms.append(cc_high**2 / (1.01 + cc_low))
    return torch.stack(terms).mean()


def _check_fused_sources(fused: torch.Tensor, sources: torch.Tensor) -> None:
    if fused.ndim not in (4, 5) or fused.shape[1] != 1:
        raise ValueError(
            f"fused must be (B, 1, *S) with 2 or 3 spatial axes, got {tuple(fused.shape)}"
        )
    if sources.ndim != fused.ndim:
        raise ValueError(
            f"sources must be (B, M, *S) like fused, got {tuple(sources.shape)} "
            f"for fused {tuple(fused.shape)}"
        )
    if sources.shape[0] != fused.shape[0] or sources.shape[2:] != fused.shape[2:]:
        raise ValueError(
            f"sources {tuple(sources.shape)} and fused {tuple(fused.shape)} differ in batch or size"
        )


def gradient_loss(
    fused: torch.Tensor, sources: torch.Tensor, norm: str = "l2", convention: str = "unit"
) -> torch.Tensor:
    """``mean | |Sobel fused| - max_m |Sobel source_m| |``; 2D Sobel for 4D inputs, 3D for 5D.

    Args:
        fused: ``(B, 1, H, W)`` or ``(B, 1, D, H, W)``.
        sources: ``(B, M, H, W)`` or ``(B, M, D, H, W)``.
        norm: magnitude norm of the ``"unit"`` convention (``"l2"`` or ``"l1"``, see
            :func:`~fuse4seg.losses.sobel_magnitude`); ``"cddfuse"`` fixes its own (L1).
        convention: ``"unit"`` (normalised kernels: a ramp of slope ``a`` has magnitude
            ``a``) or ``"cddfuse"`` (CDDFuse's / RMR-Fusion's reference code: raw kernels,
            ``sum_k |g_k|``, zero padding: ``8a`` in 2D, ``32a`` in 3D).

    Returns:
        Scalar tensor.
    """
    _check_fused_sources(fused, sources)
    if check_grad_convention(convention) == "unit":
        target = sobel_magnitude(sources, norm=norm).amax(dim=1, keepdim=True)  # (B, 1, *S)
        return (sobel_magnitude(fused, norm=norm) - target).abs().mean()
    if norm != "l2":
        raise ValueError(f"norm applies to the 'unit' convention only, got norm={norm!r}")
    target = gradient_magnitude(sources, convention).amax(dim=1, keepdim=True)  # (B, 1, *S)
    return (gradient_magnitude(fused, convention) - target).abs().mean()


def reconstruction_loss(fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """``mean (fused - mean_m source_m)^2``.

    Args:
        fused: ``(B, 1, *S)``; sources: ``(B, M, *S)``.

    Returns:
        Scalar tensor.
    """
    _check_fused_sources(fused, sources)
    return (fused - sources.mean(dim=1, keepdim=True)).pow(2).mean()


def information_loss(
    decoded: torch.Tensor, sources: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``mean w (decoded - sources)^2``: how well the sources ``(B, M, H, W)`` are recovered
    from the fused image by a per-pixel decoder (``decoded``, same shape); ``weights``
    ``(B, 1, H, W)`` (e.g. :func:`rarity_weights`) or ``None`` for ``w = 1``."""
    if decoded.shape != sources.shape:
        raise ValueError(
            f"decoded {tuple(decoded.shape)} and sources {tuple(sources.shape)} differ in shape"
        )
    err = (decoded - sources).pow(2)
    if weights is not None:
        err = err * weights
    return err.mean()


@torch.no_grad()
def rarity_weights(sources: torch.Tensor, bins: int = 16) -> torch.Tensor:
    """Per-pixel weights ``(B, 1, H, W)``, mean 1 per image, ``∝ p(v)^(-1/2)`` where ``p`` is
    the share of the image's pixels whose source vector falls in the same joint-histogram
    cell as this pixel's (each source in [0, 1] quantised to ``bins`` levels).

    Rare intensity combinations (a lesion bright in one modality only) weigh more than the
    background and healthy tissue that fill most of a slice: an information loss weighted so
    must keep the rare combinations apart. Needs ``bins ** M`` cells per image.

    Args:
        sources: ``(B, M, H, W)`` in [0, 1].
    """
    if sources.ndim != 4:
        raise ValueError(f"sources must be (B, M, H, W), got shape {tuple(sources.shape)}")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    b, m = sources.shape[:2]
    q = (sources.float().clamp(0.0, 1.0) * (bins - 1)).round().long()  # (B, M, H, W)
    cell = torch.zeros_like(q[:, 0])
    for i in range(m):
        cell = cell * bins + q[:, i]  # (B, H, W) joint cell index
    flat = cell.flatten(1)  # (B, N)
    counts = torch.zeros(b, bins**m, device=sources.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=counts.dtype))
    share = counts.gather(1, flat) / flat.shape[1]  # (B, N), > 0
    w = share.rsqrt()
    w = w / w.mean(dim=1, keepdim=True)
    return w.reshape(b, 1, *sources.shape[2:]).to(sources.dtype)


def _check_image_and_labels(image: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    """``image (B, 1, *S)`` and ``labels (B, *S)``, else ``ValueError`` naming both shapes."""
    if image.ndim != labels.ndim + 1 or image.shape[1] != 1:
        raise ValueError(
            f"{name} must be (B, 1, *S) and labels (B, *S), got {tuple(image.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if image.shape[2:] != labels.shape[1:] or image.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{name} {tuple(image.shape)} and labels {tuple(labels.shape)} differ in size"
        )


def _class_statistics(
    image: torch.Tensor,
    labels: torch.Tensor,
    region: torch.Tensor | None,
    min_classes: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel count, mean and variance of ``image (B, 1, *S)`` per image and label class.

    Class 0 counts inside ``region (B, *S)`` only (``None``: everywhere); the other classes
    wherever they are labelled. Returns ``(count, mu, var)``, each ``(B, C)`` with
    ``C = max(largest label + 1, min_classes)``; an empty class has mean and variance 0.
    """
    b = image.shape[0]
    f = image.float().reshape(b, -1)  # (B, N)
    lab = labels.reshape(b, -1).long()
    n_cls = max(int(lab.max().item()) + 1 if lab.numel() else 1, min_classes)
    onehot = torch.nn.functional.one_hot(lab.clamp(min=0), n_cls).to(f.dtype)  # (B, N, C)
    if region is not None:
        inside = region.reshape(b, -1) | (lab > 0)  # (B, N)
        onehot[..., 0] = onehot[..., 0] * inside.to(f.dtype)
    count = onehot.sum(dim=1)  # (B, C)
    safe = count.clamp(min=1.0)
    mu = torch.einsum("bn,bnc->bc", f, onehot) / safe
    var = torch.einsum("bnc,bnc->bc", (f.unsqueeze(2) - mu.unsqueeze(1)).pow(2), onehot) / safe
    return count, mu, var


def class_separation_loss(
    fused: torch.Tensor,
    labels: torch.Tensor,
    region: torch.Tensor | None = None,
    min_pixels: int = 8,
    eps: float = 1e-4,
) -> torch.Tensor:
    """``mean_{b, i<j} 1 / (1 + d_ij)``, ``d_ij = (mu_i - mu_j)^2 / (var_i + var_j + eps)``:
    how much the label classes overlap in the fused intensities (Fisher's criterion per pair).

    For every image ``b`` and label class ``c`` (class 0 counted inside ``region`` only, e.g.
    the brain), ``mu_c`` and ``var_c`` are the mean and variance of the fused values of its
    pixels; pairs where either class has fewer than ``min_pixels`` pixels are left out. The
    loss is 1 for classes of equal mean and falls toward 0 as they separate: it keeps the
    tumour classes (e.g. edema, bright in FLAIR only) apart from healthy tissue and from each
    other in the single fused channel, whatever the follower currently needs.

    Args:
        fused: ``(B, 1, H, W)``.
        labels: ``(B, H, W)`` integer classes ``0 .. C-1``.
        region: ``(B, H, W)`` bool, where class 0 counts (``None``: everywhere).

    Returns:
        Scalar tensor; 0 (with a graph) when no image has two classes.
    """
    _check_image_and_labels(fused, labels, "fused")
    count, mu, var = _class_statistics(fused, labels, region)
    n_cls = count.shape[1]
    valid = count >= min_pixels  # (B, C)
    iu = torch.triu_indices(n_cls, n_cls, offset=1, device=fused.device)
    d = (mu[:, iu[0]] - mu[:, iu[1]]).pow(2) / (var[:, iu[0]] + var[:, iu[1]] + eps)
    pair_ok = valid[:, iu[0]] & valid[:, iu[1]]  # (B, P)
    if not bool(pair_ok.any()):
        return fused.float().sum() * 0.0
    overlap = 1.0 / (1.0 + d)
    return overlap[pair_ok].mean()


#: units of :func:`class_contrasts`: the healthy tissue's sd, or the pooled sd of both classes
CONTRAST_SPREADS = ("healthy", "pooled")


def class_contrasts(
    image: torch.Tensor,
    labels: torch.Tensor,
    region: torch.Tensor,
    min_pixels: int = 8,
    eps: float = 1e-6,
    spread: str = "healthy",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrast of each tumour class against healthy tissue, in units of a spread.

    ``k_bc = (mu_bc - mu_b0) / s_bc`` for image ``b`` and class ``c >= 1``: ``mu_bc`` the
    mean of the class's pixels, ``mu_b0`` that of class 0 inside ``region`` (healthy brain);
    ``s_bc = sd_b0`` (``spread="healthy"``: the contrast of one class does not change when
    another class gets brighter) or ``sqrt((var_b0 + var_bc) / 2)`` (``"pooled"``: d', which
    also falls when the class itself spreads out). Invariant to a positive affine change of
    ``image`` (min-max or clip normalisation does not change it).

    Args:
        image: ``(B, 1, *S)``.
        labels: ``(B, *S)`` integer classes ``0 .. C-1``.
        region: ``(B, *S)`` bool, where class 0 counts.
        spread: ``"healthy"`` or ``"pooled"``.

    Returns:
        ``(k, valid)``: ``(B, C - 1)`` contrasts and a bool mask of the entries whose class
        and healthy tissue both have at least ``min_pixels`` pixels.
    """
    _check_image_and_labels(image, labels, "image")
    if spread not in CONTRAST_SPREADS:
        raise ValueError(f"spread must be one of {CONTRAST_SPREADS}, got {spread!r}")
    count, mu, var_c = _class_statistics(image, labels, region, min_classes=2)
    if spread == "healthy":
        var = var_c[:, :1]  # (B, 1)
    else:
        var = (var_c[:, :1] + var_c[:, 1:]) / 2.0  # (B, C - 1)
    k = (mu[:, 1:] - mu[:, :1]) / (var + eps).sqrt()
    valid = (count[:, 1:] >= min_pixels) & (count[:, :1] >= min_pixels)
    return k, valid


def contrast_floor_loss(
    fused: torch.Tensor,
    reference: torch.Tensor,
    labels: torch.Tensor,
    region: torch.Tensor,
    min_pixels: int = 8,
    spread: str = "healthy",
) -> torch.Tensor:
    """``mean relu(|k_ref| - |k_fused|)`` over images and tumour classes: a one-sided anchor
    that lets the fused image raise any class's contrast against healthy tissue but not
    lower it below the reference's (e.g. ``x_avg``); contrasts from ``class_contrasts``.

    Unlike ``class_separation_loss`` it asks nothing of the spread inside a class and is 0
    whenever every class stands out at least as much as in the reference.

    Args:
        fused: ``(B, 1, *S)``, with gradient.
        reference: ``(B, 1, *S)``, no gradient needed (detached here).
        labels: ``(B, *S)`` integer classes; region: ``(B, *S)`` bool (the brain).
        spread: units of the contrasts, ``"healthy"`` or ``"pooled"`` (``class_contrasts``).

    Returns:
        Scalar tensor; 0 (with a graph) when no image has a valid class.
    """
    if fused.shape != reference.shape:
        raise ValueError(
            f"fused and reference must have one shape, got {tuple(fused.shape)} and "
            f"{tuple(reference.shape)}"
        )
    _check_image_and_labels(fused, labels, "fused")
    k_f, valid = class_contrasts(fused, labels, region, min_pixels, spread=spread)
    with torch.no_grad():
        k_r, _ = class_contrasts(reference.detach(), labels, region, min_pixels, spread=spread)
    if not bool(valid.any()):
        return fused.float().sum() * 0.0
    shortfall = torch.relu(k_r.abs() - k_f.abs())
    return shortfall[valid].mean()
