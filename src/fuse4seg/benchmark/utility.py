"""Task utility of a fusion method: how well one frozen, trained segmentation follower
segments its fused images.

A fusion metric (EN, SSIM, Qabf...) says how a fused image relates to its sources; this says
what it is worth to the segmentation that follows. Every fuser (a classical rule of
:mod:`fuse4seg.fusion_rules`, or the leader of any trained 2D model with a fused image) fuses
the same held-out cases of a prepared store, slice by slice; one **reference follower** (the
segmentation network of a trained single-channel model, e.g. the ``average`` baseline, whose
follower was trained on the modality mean x_avg) segments each fused volume; the score is the
3D Dice per class (NCR, ED, ET) and their mean, per case and averaged over cases.

Read the score as: *Dice of a segmenter trained on another image, fed this one*. It rewards
fused images that keep the tumour classes where the reference follower expects them; a fuser
whose image is good but looks unlike the follower's training input is penalised. With
``adapt_steps > 0`` a copy of the follower is first fine-tuned on the fuser's images of the
training cases (same steps, seed and slices for every fuser), which removes most of that bias
at the cost of a short training per fuser; a follower trained from scratch on each fuser is
``fuse4seg benchmark seg --methods rule-<name> ...``.

An external fusion method plugs in through its output folder (:class:`FusedFolder`): grey
slices named ``<case>_zNNN.png`` anywhere under one folder, at the store's slice size, which
is what the method writes when it fuses the modality PNGs of ``fuse4seg export brats-fuse``
run on the same prepared store (slice ``z`` of the store's case).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fuse4seg.errors import ConfigError, InputError
from fuse4seg.io.atomic import atomic_path
from fuse4seg.metrics.segmentation import dice_scores

__all__ = [
    "UTILITY_CLASSES",
    "Fuser",
    "FusedFolder",
    "task_utility",
    "rule_fuser",
    "model_fuser",
]

#: canonical classes scored (label -> name)
UTILITY_CLASSES: dict[int, str] = {1: "NCR", 2: "ED", 3: "ET"}

#: ``(B, M, H, W)`` sources in [0, 1] -> ``(B, 1, H, W)`` fused image
Fuser = Callable[[torch.Tensor], torch.Tensor]


def rule_fuser(name: str) -> Fuser:
    """A classical rule of :mod:`fuse4seg.fusion_rules` as a fuser."""
    from fuse4seg.fusion_rules import apply_fusion_rule, get_fusion_rule

    get_fusion_rule(name)  # unknown name: ConfigError listing the rules
    return lambda x: apply_fusion_rule(name, x)


def model_fuser(model: nn.Module) -> Fuser:
    """The fusion step of a trained 2D model (its leader, or its rule)."""
    fuse = getattr(model, "fuse", None)
    if fuse is None or getattr(model, "spatial_dims", 2) != 2:
        raise ConfigError(f"{type(model).__name__} has no 2D fusion step")

    def run(x: torch.Tensor) -> torch.Tensor:
        out = fuse(x)
        if out is None:
            raise ConfigError(f"method {getattr(model, 'method', '?')!r} has no fused image")
        return out

    return run


class FusedFolder:
    """Fused slices written by an external fusion method.

    Every file ``<case>_zNNN.<png|tif|...>`` under ``root`` (any depth) is slice ``NNN`` of
    store case ``<case>``: ``(H, W)`` grey in [0, 1] (8- or 16-bit), at the store's slice
    size. A slice missing from the folder counts as an empty (zero) image, the way `export
    brats-fuse --slices brain` leaves out slices without brain; a case with no slice at all is
    an error.

    Raises:
        InputError: ``root`` is not a folder, holds no such file, or names one slice twice.
    """

    def __init__(self, root: str | Path) -> None:
        from fuse4seg.inference.image_io import image_stem, is_image_file

        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(self.root, "fused-image folder not found")
        self._paths: dict[tuple[str, int], Path] = {}
        for path in sorted(self.root.rglob("*_z*")):
            case, sep, z = image_stem(path).rpartition("_z")
            if not (sep and case and z.isdigit() and path.is_file() and is_image_file(path)):
                continue
            other = self._paths.setdefault((case, int(z)), path)
            if other != path:
                raise InputError(
                    self.root,
                    f"two fused images of {case} slice {int(z)} ({other.relative_to(self.root)}"
                    f", {path.relative_to(self.root)}): give one method's folder",
                )
        if not self._paths:
            raise InputError(self.root, "no fused slices named <case>_zNNN.png in the folder")

    def slices(self, case_id: str, zs: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
        """Fused slices ``zs`` of ``case_id`` as ``(len(zs), 1, H, W)`` float32 in [0, 1]."""
        from fuse4seg.inference.image_io import read_image

        if not any(c == case_id for c, _ in self._paths):
            raise InputError(self.root, f"no fused slice of case {case_id}")
        out = np.zeros((len(zs), 1, *shape), dtype=np.float32)
        for k, z in enumerate(zs):
            path = self._paths.get((case_id, int(z)))
            if path is None:
                continue
            pixels = read_image(path).pixels
            if pixels.shape != tuple(shape):
                raise InputError(
                    path,
                    f"fused image is {pixels.shape}, the store's slices are {tuple(shape)} "
                    "(grey, at the store's size)",
                )
            out[k, 0] = pixels
        return out

    def count(self, case_id: str) -> int:
        """Number of fused slices of ``case_id`` in the folder."""
        return sum(c == case_id for c, _ in self._paths)


#: ``((case, slice) of each image, (b, M, H, W) sources of those slices, device)`` ->
#: ``(b, 1, H, W)`` fused images in [0, 1]
_FusedOf = Callable[[Sequence[tuple[str, int]], np.ndarray, torch.device], torch.Tensor]


def _fused_of(fuser: Fuser | FusedFolder) -> _FusedOf:
    """One way to get fused slices from a fuser (it fuses the sources) or a folder (read)."""
    if isinstance(fuser, FusedFolder):

        def read(
            picks: Sequence[tuple[str, int]], x: np.ndarray, dev: torch.device
        ) -> torch.Tensor:
            shape = tuple(x.shape[-2:])
            return torch.from_numpy(
                np.concatenate([fuser.slices(cid, [z], shape) for cid, z in picks])
            ).to(dev)

        return read

    def fuse(picks: Sequence[tuple[str, int]], x: np.ndarray, dev: torch.device) -> torch.Tensor:
        return fuser(torch.from_numpy(np.ascontiguousarray(x)).float().to(dev))

    return fuse


def _follower_of(model: nn.Module) -> nn.Module:
    """The single-channel segmentation network of a trained model."""
    seg = getattr(model, "seg_net", None)
    if seg is None:
        raise ConfigError(f"{type(model).__name__} has no 2D segmentation network (seg_net)")
    probe = torch.zeros(1, 1, 32, 32, device=next(seg.parameters()).device)
    try:
        with torch.no_grad():
            seg.eval()(probe)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"the reference follower must take one input channel (a fused image); "
            f"the {getattr(model, 'method', '?')!r} model's does not ({str(exc).splitlines()[0]})"
        ) from exc
    return seg


@torch.no_grad()
def _segment_volume(
    fused_of: _FusedOf,
    cid: str,
    follower: nn.Module,
    volume: np.ndarray,
    device: torch.device,
    batch: int,
) -> np.ndarray:
    """``volume (D, M, H, W)`` of case ``cid`` -> canonical labels ``(D, H, W)`` (uint8)."""
    out = []
    for i in range(0, volume.shape[0], batch):
        picks = [(cid, z) for z in range(i, min(i + batch, volume.shape[0]))]
        fused = fused_of(picks, volume[i : i + batch], device).float().clamp(0.0, 1.0)
        logits = follower(fused)  # the networks pad and crop any size themselves
        out.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


def _adapt(
    follower: nn.Module,
    fused_of: _FusedOf,
    store: Any,
    train_ids: Sequence[str],
    steps: int,
    device: torch.device,
    seed: int,
    batch: int = 8,
    lr: float = 1e-3,
) -> nn.Module:
    """A copy of ``follower`` fine-tuned ``steps`` steps (Dice + CE) on the fuser's images of
    tumour slices of ``train_ids``; the slices drawn depend on ``seed`` only."""
    from fuse4seg.losses import DiceCELoss

    net = copy.deepcopy(follower).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    loss_fn = DiceCELoss(num_classes=4)
    pool = []  # (case, slice) with tumour
    for cid in train_ids:
        lab = np.asarray(store.label(cid))
        pool += [(cid, int(z)) for z in np.flatnonzero(lab.reshape(lab.shape[0], -1).any(1))]
    if not pool:
        raise InputError(str(train_ids), "no tumour slice in the training cases to adapt on")
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        picks = [pool[i] for i in rng.integers(0, len(pool), size=batch)]
        x = torch.from_numpy(np.stack([np.asarray(store.image(c))[z] for c, z in picks]))
        y = torch.from_numpy(np.stack([np.asarray(store.label(c))[z] for c, z in picks]))
        with torch.no_grad():
            fused = fused_of(picks, x.numpy(), device).float().clamp(0.0, 1.0)
        logits = net(fused)
        loss = loss_fn(logits, y.long().to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def task_utility(
    fusers: Mapping[str, Fuser | FusedFolder],
    follower_model: nn.Module,
    store: Any,
    case_ids: Sequence[str],
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    adapt_steps: int = 0,
    train_ids: Sequence[str] = (),
    seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Dice of the reference follower on each fuser's images of ``case_ids``.

    Args:
        fusers: display name -> :data:`Fuser` (``rule_fuser``, ``model_fuser``) or
            :class:`FusedFolder` (an external method's fused slices; with ``adapt_steps``
            it must hold the training cases' slices too).
        follower_model: trained model whose ``seg_net`` takes one channel (e.g. the
            ``average`` baseline's model).
        store: prepared store view (``image(cid) (D, M, H, W)`` in [0, 1],
            ``label(cid) (D, H, W)``); its modality order must be the fusers'.
        case_ids: cases to score (e.g. one fold's held-out cases).
        out_dir: where to write ``utility_cases.csv`` and ``utility.md`` (None: nothing).
        adapt_steps: fine-tune a copy of the follower on each fuser's images of
            ``train_ids`` first (0: frozen follower).

    Returns:
        ``{"summary": {fuser: {"Dice_NCR", "Dice_ED", "Dice_ET", "Dice_mean"}}, "rows": [...]}``.
    """
    say = log or (lambda _m: None)
    dev = torch.device(device)
    if not fusers:
        raise ConfigError("no fusers to score")
    if not case_ids:
        raise InputError(str(getattr(store, "root", "store")), "no cases to score")
    if adapt_steps < 0:
        raise ConfigError(f"adapt_steps must be >= 0, got {adapt_steps}")
    if adapt_steps and not train_ids:
        raise ConfigError("adapt_steps > 0 needs training cases to adapt on")
    base = _follower_of(follower_model).to(dev).eval()
    rows: list[dict[str, Any]] = []
    for name, fuser in fusers.items():
        fused_of = _fused_of(fuser)
        follower = base
        if adapt_steps:
            follower = _adapt(base, fused_of, store, train_ids, adapt_steps, dev, seed)
        for cid in case_ids:
            volume = np.asarray(store.image(cid), dtype=np.float32)
            ref = np.asarray(store.label(cid))
            labels = _segment_volume(fused_of, cid, follower, volume, dev, batch_size)
            scores = dice_scores(labels, ref, {n: (k,) for k, n in UTILITY_CLASSES.items()})
            row = {"fuser": name, "case": cid, **scores}
            row["Dice_mean"] = float(
                np.mean([scores[f"Dice_{n}"] for n in UTILITY_CLASSES.values()])
            )
            rows.append(row)
        mine = [r["Dice_mean"] for r in rows if r["fuser"] == name]
        say(f"{name}: mean Dice {np.mean(mine):.3f} over {len(mine)} case(s)")
    keys = [f"Dice_{n}" for n in UTILITY_CLASSES.values()] + ["Dice_mean"]
    summary = {
        name: {k: float(np.mean([r[k] for r in rows if r["fuser"] == name])) for k in keys}
        for name in fusers
    }
    if out_dir is not None:
        _write(Path(out_dir), rows, summary, keys, adapt_steps, len(case_ids))
    return {"summary": summary, "rows": rows}


def _write(
    out: Path,
    rows: list[dict[str, Any]],
    summary: dict[str, dict[str, float]],
    keys: list[str],
    adapt_steps: int,
    num_cases: int,
) -> None:
    import csv
    import io

    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["fuser", "case", *keys], extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    with atomic_path(out / "utility_cases.csv") as tmp:
        tmp.write_text(buf.getvalue())
    how = (
        "the reference follower frozen"
        if not adapt_steps
        else f"a copy of the reference follower fine-tuned {adapt_steps} steps on each fuser"
    )
    best = max(summary, key=lambda n: summary[n]["Dice_mean"])
    lines = [
        "# Task utility of the fusers",
        "",
        f"{num_cases} held-out case(s), {how}; 3D Dice per class, mean over cases.",
        "",
        "| fuser | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name, vals in summary.items():
        cells = [
            ("**{:.3f}**" if name == best and k == "Dice_mean" else "{:.3f}").format(vals[k])
            if not math.isnan(vals[k])
            else "n/a"
            for k in keys
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    with atomic_path(out / "utility.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
