"""``benchmark fusion``: Table 2 style fusion quality on the Harvard pairs.

Pairs: ``HARVARD/<SET>/MRI/<name>.png`` with ``HARVARD/<SET>/<OTHER>/<name>.png`` for the sets
``MRI_CT``, ``MRI_PET``, ``MRI_SPECT`` (OTHER = CT, PET, SPECT). Source A is the MRI, B the
other image; both are read as the reference evaluator reads them (8-bit colour -> grey
``round(0.299 R + 0.587 G + 0.114 B)``, so a pseudo-colour PET/SPECT is fused and scored on its
luminance) and fused as ``(1, 2, H, W)`` in ``[0, 1]`` (grey / 255).

Methods: the classical rules (:mod:`fuse4seg.fusion_rules`) and our fusion network
(FusionNet, 2 modalities) trained self-supervised as the trainer's ``disjoint`` leader is:
by default with CDDFuse's two-phase objective (:mod:`fuse4seg.losses.cddfuse`: the first third
of the steps as an autoencoder, then intensity and gradient maxima), or, with
``disjoint_objective: regularisers`` in the config, with Fuse4Seg's upper-level regularisers
only (``alpha L_decomp + beta L_grad + gamma L_recon``); on the train split of the pairs,
from scratch, with random crops and flips.

Train / test split (:func:`split_pairs`, deterministic, no randomness): per set, pairs are
sorted by numeric file name; pairs that share a byte-identical source file (MRI_PET: PET 32-52
are copies of PET 11-31) form one group, so a duplicated image never sits in both splits; the
``k``-th group (``k = 0, 1, ...``) goes to train when ``ceil((k + 1) f) > ceil(k f)`` with
``f`` the train fraction (default 0.5: every other group, starting with the first). Every
method is scored on the test pairs only.

Scoring: each fused image is written as an 8-bit grey PNG, read back like the sources and
scored with EN SD SF MI SCD VIF Qabf SSIM PSNR AG in the ``reference`` convention of
:mod:`fuse4seg.metrics`; tables give the mean (and std) over the test pairs of each set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fuse4seg.benchmark.tables import MeanStd, mean_std, write_table
from fuse4seg.errors import ConfigError, InputError
from fuse4seg.io.atomic import atomic_path, save_json_atomic, save_torch_atomic

__all__ = [
    "HARVARD_SETS",
    "FUSION_METRICS",
    "HarvardPair",
    "discover_harvard_pairs",
    "split_pairs",
    "score_fused",
    "train_pair_fusion_net",
    "FusionBenchmarkResult",
    "run_fusion_benchmark",
]

#: set name -> folder of the second modality
HARVARD_SETS: dict[str, str] = {"MRI_CT": "CT", "MRI_PET": "PET", "MRI_SPECT": "SPECT"}
#: metric columns, in table order
FUSION_METRICS: tuple[str, ...] = (
    "EN",
    "SD",
    "SF",
    "MI",
    "SCD",
    "VIF",
    "Qabf",
    "SSIM",
    "PSNR",
    "AG",
)
_NET = "fusionnet"


@dataclass(frozen=True)
class HarvardPair:
    """One co-registered pair: ``set_name`` (e.g. ``MRI_PET``), file ``name``, both paths."""

    set_name: str
    name: str
    mri: Path
    other: Path

    @property
    def key(self) -> str:
        return f"{self.set_name}/{self.name}"


def _numeric_key(name: str) -> tuple:
    stem = name.rsplit(".", 1)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def discover_harvard_pairs(
    root: str | Path, sets: Sequence[str] | None = None
) -> list[HarvardPair]:
    """Pairs of ``root/<SET>/MRI/*.png`` and ``root/<SET>/<OTHER>/*.png`` matched by name.

    Raises:
        InputError: ``root`` missing, a requested set missing, or no pair found.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "Harvard folder does not exist")
    wanted = list(HARVARD_SETS) if sets is None else list(sets)
    for s in wanted:
        if s not in HARVARD_SETS:
            raise ConfigError(f"unknown Harvard set {s!r}; choose from {list(HARVARD_SETS)}")
    pairs: list[HarvardPair] = []
    for s in wanted:
        mri_dir, other_dir = root / s / "MRI", root / s / HARVARD_SETS[s]
        if not mri_dir.is_dir() or not other_dir.is_dir():
            if sets is not None:
                raise InputError(root / s, f"expected folders MRI/ and {HARVARD_SETS[s]}/")
            continue
        names = sorted(
            (p.name for p in mri_dir.iterdir() if p.suffix.lower() == ".png"), key=_numeric_key
        )
        pairs.extend(
            HarvardPair(s, n, mri_dir / n, other_dir / n)
            for n in names
            if (other_dir / n).is_file()
        )
    if not pairs:
        raise InputError(
            root, "no Harvard pairs found (expected <SET>/MRI/*.png + <SET>/CT|PET|SPECT)"
        )
    return pairs


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _duplicate_groups(members: Sequence[HarvardPair]) -> list[list[int]]:
    """Indices of ``members`` grouped so pairs sharing a byte-identical file are together
    (union-find over file digests)."""
    parent = list(range(len(members)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[str, int] = {}
    for i, p in enumerate(members):
        for path in (p.mri, p.other):
            h = _digest(path)
            if h in first_with:
                parent[find(i)] = find(first_with[h])
            else:
                first_with[h] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(members)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def split_pairs(
    pairs: Sequence[HarvardPair], train_fraction: float = 0.5
) -> tuple[list[HarvardPair], list[HarvardPair]]:
    """Deterministic train/test split of the pairs (see the module docstring).

    Returns ``(train, test)`` in input order. ``train_fraction`` 0 puts everything in test.
    """
    if not 0.0 <= train_fraction < 1.0:
        raise ConfigError(f"train fraction must be in [0, 1), got {train_fraction}")
    train: list[HarvardPair] = []
    test: list[HarvardPair] = []
    for s in dict.fromkeys(p.set_name for p in pairs):
        members = sorted((p for p in pairs if p.set_name == s), key=lambda p: _numeric_key(p.name))
        groups = _duplicate_groups(members)
        ordered = sorted(groups, key=min)
        for k, g in enumerate(ordered):
            to_train = math.ceil((k + 1) * train_fraction) > math.ceil(k * train_fraction)
            (train if to_train else test).extend(members[i] for i in g)
    order = {p.key: i for i, p in enumerate(pairs)}
    return sorted(train, key=lambda p: order[p.key]), sorted(test, key=lambda p: order[p.key])


def _read_pair(pair: HarvardPair) -> np.ndarray:
    """``(2, H, W)`` float32 grey levels 0..255 (MRI, other), as the reference reads them."""
    from fuse4seg.metrics.image_reading import read_gray_reference

    a, b = read_gray_reference(pair.mri), read_gray_reference(pair.other)
    if a.shape != b.shape:
        raise InputError(pair.other, f"size {b.shape} differs from {pair.mri} {a.shape}")
    return np.stack([a, b])


def score_fused(sources: np.ndarray, fused: np.ndarray) -> dict[str, float]:
    """Reference-convention metrics of one fused image.

    Args:
        sources: ``(2, H, W)`` grey levels 0..255 (A = MRI, B = other).
        fused: ``(H, W)`` grey levels 0..255 (as read back from the 8-bit PNG).
    """
    from fuse4seg.metrics.fusion_collection import compute_fusion_metrics

    src = torch.from_numpy(np.asarray(sources, dtype=np.float32))[None]  # (1, 2, H, W)
    f = torch.from_numpy(np.asarray(fused, dtype=np.float32))[None]  # (1, H, W)
    values = compute_fusion_metrics(src, f, "reference", FUSION_METRICS)
    return {k: float(v.reshape(-1)[0]) for k, v in values.items()}


def _random_crops(
    images: list[np.ndarray], batch: int, crop: int, rng: np.random.Generator
) -> torch.Tensor:
    """``(batch, 2, crop, crop)`` random crops with random flips from ``(2, H, W)`` images."""
    out = np.empty((batch, 2, crop, crop), dtype=np.float32)
    for k in range(batch):
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[1:]
        i = int(rng.integers(0, h - crop + 1))
        j = int(rng.integers(0, w - crop + 1))
        patch = img[:, i : i + crop, j : j + crop]
        if rng.random() < 0.5:
            patch = patch[:, :, ::-1]
        if rng.random() < 0.5:
            patch = patch[:, ::-1, :]
        out[k] = patch
    return torch.from_numpy(out)


def train_pair_fusion_net(
    images: list[np.ndarray],
    preset: str = "tiny",
    steps: int = 200,
    batch_size: int = 8,
    crop: int = 128,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = print,
    config_file: str | Path | None = None,
) -> torch.nn.Module:
    """Train a 2-modality FusionNet without a segmentation term (self-supervised).

    Uses the training preset's leader learning rate, weight decay, grad clipping, AdamW with a
    cosine schedule and the ``disjoint`` baseline's leader step: CDDFuse's objective
    (:func:`fuse4seg.train.bilevel.cddfuse_step`, phase 1 for the first third of the steps)
    or, with ``disjoint_objective: regularisers``, the upper-level regularisers with the
    preset's alpha, beta, gamma (:func:`fuse4seg.train.bilevel.fusion_only_step`). Returns
    the EMA leader (eval mode) when the preset uses EMA, else the raw leader.

    Args:
        images: training pairs, each ``(2, H, W)`` in ``[0, 1]``.
        preset: training preset (``tiny``, ``base``, ``paper``): network size and settings.
        steps: leader optimiser steps.
        crop: random crop side (clipped to the image size).
        config_file: YAML overrides of the preset (e.g. ``gamma``, ``lr_leader``), keys of
            ``fuse4seg train``.
    """
    from fuse4seg.losses.cddfuse import CDDFUSE_PHASE1_FRACTION
    from fuse4seg.models import create_fusion_net
    from fuse4seg.train.bilevel import (
        LossWeights,
        TrainState,
        cddfuse_step,
        cosine_factor,
        fusion_only_step,
    )
    from fuse4seg.train.config import make_config
    from fuse4seg.train.ema import EMA

    if not images:
        raise ValueError("no training images")
    if steps < 1:
        raise ConfigError(f"fusion training steps must be >= 1, got {steps}")
    cfg = make_config(preset, config_file)
    dev = torch.device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    crop = min(crop, *(min(im.shape[1:]) for im in images))
    crop -= crop % 16
    if crop < 16:
        raise ValueError("training images must be at least 16x16")
    net = create_fusion_net(cfg.fusion_preset, 2).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr_leader, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_factor(s, steps, cfg.min_lr_ratio)
    )
    ema = EMA(net, cfg.ema_momentum, cfg.ema_warmup) if cfg.use_ema else None
    state = TrainState(
        follower=torch.nn.Identity(),  # not used by the fusion-only step
        opt_follower=None,  # type: ignore[arg-type]
        seg_criterion=None,  # type: ignore[arg-type]
        leader=net,
        opt_leader=opt,
        ema=ema,
        sched_leader=sched,
        weights=LossWeights(cfg.alpha, cfg.beta, cfg.gamma, grad_convention=cfg.grad_convention),
        grad_clip=cfg.grad_clip,
    )
    t0 = time.perf_counter()
    for step in range(steps):
        x = _random_crops(images, batch_size, crop, rng).to(dev)
        if cfg.disjoint_objective == "cddfuse":
            terms = cddfuse_step(state, x, 1 if step < CDDFUSE_PHASE1_FRACTION * steps else 2)
        else:
            terms = fusion_only_step(state, x)
        if log and (step % max(1, steps // 10) == 0 or step == steps - 1):
            txt = " ".join(f"{k}={v:.4f}" for k, v in terms.items())
            log(f"fusion net step {step + 1}/{steps} {txt} ({time.perf_counter() - t0:.0f}s)")
    final = ema.module if ema is not None else net
    return final.eval()


def _net_fuser(
    net: torch.nn.Module, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    from fuse4seg.models import crop_to, zero_pad_to_multiple

    @torch.inference_mode()
    def fuse(x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        out = net(zero_pad_to_multiple(x.to(device), 16)).fused
        return crop_to(out.float(), size).clamp(0, 1).cpu()

    return fuse


@dataclass
class FusionBenchmarkResult:
    """Per-image scores ``{method: {pair key: {metric: value}}}``, tables and timings."""

    out_dir: Path
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    summary: list[dict] = field(default_factory=list)
    train_pairs: list[str] = field(default_factory=list)
    test_pairs: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def _write_grid(
    path: Path, examples: list[tuple[HarvardPair, dict[str, np.ndarray]]], methods: list[str]
) -> None:
    """One row per example pair: MRI, other (as stored, colour kept), fused per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    cols = 2 + len(methods)
    fig, axes = plt.subplots(
        len(examples), cols, figsize=(1.9 * cols, 2.0 * len(examples)), squeeze=False
    )
    for r, (pair, fused) in enumerate(examples):
        panels = [
            ("MRI", np.asarray(Image.open(pair.mri).convert("RGB"))),
            (HARVARD_SETS[pair.set_name], np.asarray(Image.open(pair.other).convert("RGB"))),
        ] + [(m, fused[m]) for m in methods]
        for c, (title, img) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 or c == 1:  # the second source differs per set (CT, PET, SPECT)
                ax.set_title(title, fontsize=9)
        axes[r, 0].set_ylabel(pair.key, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def run_fusion_benchmark(
    harvard_dir: str | Path,
    out_dir: str | Path,
    rules: Sequence[str] = ("average", "max", "laplacian", "dwt", "pca"),
    train_net: bool = True,
    preset: str = "tiny",
    steps: int = 200,
    batch_size: int = 8,
    crop: int = 128,
    train_fraction: float = 0.5,
    sets: Sequence[str] | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = print,
    config_file: str | Path | None = None,
) -> FusionBenchmarkResult:
    """Run the fusion benchmark and write its outputs to ``out_dir``.

    Writes ``fused/<method>/<SET>/<name>.png``, ``fusion_scores.csv`` (per image),
    ``fusion_table.md`` / ``.csv`` (mean per set and method), ``fusion_grid.png``,
    ``split.json`` and ``benchmark_fusion.json`` (arguments, timings).

    Args:
        rules: classical rules to score.
        train_net: also train and score our fusion network.
        preset, steps, batch_size, crop: fusion network training (see
            :func:`train_pair_fusion_net`).
        train_fraction: share of pair groups used to train the network.
        sets: Harvard sets (default: all present).
        max_pairs: use only the first ``max_pairs`` pairs of each set (quick runs).
        config_file: YAML overrides of the training preset (loss weights, learning rate).
    """
    from fuse4seg.fusion_rules import FUSION_RULES, get_fusion_rule
    from fuse4seg.inference.image_io import write_grey_png
    from fuse4seg.metrics.image_reading import read_gray_reference

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    for r in rules:
        if r not in FUSION_RULES:
            raise ConfigError(f"unknown fusion rule {r!r}; choose from {sorted(FUSION_RULES)}")
    if not rules and not train_net:
        raise ConfigError("nothing to benchmark: no rules and no fusion network")
    if max_pairs is not None and max_pairs < 2:
        raise ConfigError(f"max pairs must be >= 2, got {max_pairs}")
    dev = torch.device(device)
    pairs = discover_harvard_pairs(harvard_dir, sets)
    if max_pairs is not None:
        pairs = [
            p
            for s in dict.fromkeys(q.set_name for q in pairs)
            for p in [q for q in pairs if q.set_name == s][:max_pairs]
        ]
    train, test = split_pairs(pairs, train_fraction if train_net else 0.0)
    if not test:
        raise ConfigError("the split left no test pair; lower the train fraction")
    res = FusionBenchmarkResult(out_dir=out)
    res.train_pairs = [p.key for p in train]
    res.test_pairs = [p.key for p in test]
    save_json_atomic(
        {
            "rule": "see fuse4seg.benchmark.fusion.split_pairs",
            "train_fraction": train_fraction,
            "train": res.train_pairs,
            "test": res.test_pairs,
        },
        out / "split.json",
    )

    fusers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        r: get_fusion_rule(r) for r in rules
    }
    if train_net:
        if not train:
            raise ConfigError("no training pair for the fusion network; raise the train fraction")
        t0 = time.perf_counter()
        imgs = [_read_pair(p) / 255.0 for p in train]
        net = train_pair_fusion_net(
            imgs, preset, steps, batch_size, crop, seed, dev, log, config_file
        )
        res.seconds[f"{_NET}_train"] = time.perf_counter() - t0
        fusers[_NET] = _net_fuser(net, dev)
        save_torch_atomic(
            {
                "preset": preset,
                "config": dataclasses.asdict(net.config),
                "state_dict": net.state_dict(),
            },
            out / "fusionnet_harvard.pt",
        )

    methods = list(fusers)
    examples: dict[str, tuple[HarvardPair, dict[str, np.ndarray]]] = {}
    for method in methods:
        res.scores[method] = {}
        res.seconds[f"{method}_fuse"] = 0.0
    for pair in test:
        sources = _read_pair(pair)  # (2, H, W) 0..255
        x = torch.from_numpy(sources / 255.0)[None].float()  # (1, 2, H, W)
        for method in methods:
            t0 = time.perf_counter()
            fused = fusers[method](x)[0, 0].numpy()  # (H, W) in [0, 1]
            res.seconds[f"{method}_fuse"] += time.perf_counter() - t0
            png = out / "fused" / method / pair.set_name / pair.name
            write_grey_png(png, fused)
            back = read_gray_reference(png)  # what the reference evaluator scores
            res.scores[method][pair.key] = score_fused(sources, back)
            if pair.set_name not in examples:
                examples[pair.set_name] = (pair, {})
            if examples[pair.set_name][0] is pair:
                examples[pair.set_name][1][method] = back
        if log:
            log(f"scored {pair.key}")

    # per-image CSV, summary tables
    per_image = [{"method": m, "pair": k, **v} for m in methods for k, v in res.scores[m].items()]
    write_table(per_image, out / "fusion_scores", ["method", "pair", *FUSION_METRICS])
    rows_md: list[dict] = []
    rows_csv: list[dict] = []
    for s in dict.fromkeys(p.set_name for p in test):
        keys = [p.key for p in test if p.set_name == s]
        for m in methods:
            stats: dict[str, MeanStd] = {
                name: mean_std(res.scores[m][k][name] for k in keys) for name in FUSION_METRICS
            }
            base = {"set": s, "method": m, "pairs": len(keys)}
            rows_csv.append({**base, **stats})
            rows_md.append({**base, **{k: v.mean for k, v in stats.items()}})
    res.summary = rows_csv
    cols = ["set", "method", "pairs", *FUSION_METRICS]
    md_path, _ = write_table(rows_md, out / "fusion_table", cols, title="Fusion quality")
    # CSV with mean and std columns overwrites the mean-only CSV of write_table
    from fuse4seg.benchmark.tables import to_csv

    with atomic_path(out / "fusion_table.csv") as tmp:
        tmp.write_text(to_csv(rows_csv, cols))
    _write_grid(out / "fusion_grid.png", list(examples.values()), methods)
    n_test = max(1, len(test))
    timing = {m: 1000.0 * res.seconds[f"{m}_fuse"] / n_test for m in methods}
    save_json_atomic(
        {
            "harvard_dir": str(harvard_dir),
            "rules": list(rules),
            "train_net": train_net,
            "preset": preset,
            "config_file": None if config_file is None else str(config_file),
            "steps": steps,
            "batch_size": batch_size,
            "crop": crop,
            "train_fraction": train_fraction,
            "seed": seed,
            "num_train_pairs": len(train),
            "num_test_pairs": len(test),
            "seconds": res.seconds,
            "fuse_ms_per_image": timing,
        },
        out / "benchmark_fusion.json",
    )
    res.files = [
        md_path,
        out / "fusion_table.csv",
        out / "fusion_scores.csv",
        out / "fusion_grid.png",
        out / "split.json",
        out / "benchmark_fusion.json",
    ]
    return res
