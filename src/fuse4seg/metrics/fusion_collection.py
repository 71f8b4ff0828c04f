"""The full fusion metric set in one call, and an accumulating ``FusionMetrics`` class."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from fuse4seg.metrics import _kernels
from fuse4seg.metrics import fusion as fm
from fuse4seg.metrics import fusion_literature as fl
from fuse4seg.metrics.mef_ssim import mef_ssim
from fuse4seg.metrics.ms_ssim import ms_ssim
from fuse4seg.metrics.phase_congruency import q_p
from fuse4seg.metrics.windowed_fmi import fmi_windowed

__all__ = [
    "FUSION_METRICS",
    "EXTRA_FUSION_METRICS",
    "LITERATURE_FUSION_METRICS",
    "ALL_FUSION_METRICS",
    "LOWER_IS_BETTER",
    "SUMMED_OVER_SOURCES",
    "AVERAGED_OVER_SOURCES",
    "OVER_SOURCES",
    "compute_fusion_metrics",
    "FusionMetrics",
]

#: The metrics of the reference evaluator, in the column order of ``evaluate-fusion``.
FUSION_METRICS: tuple[str, ...] = (
    "EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "PSNR",
)  # fmt: skip
#: Metrics computed on request or as extra columns (not in the reference evaluator).
EXTRA_FUSION_METRICS: tuple[str, ...] = ("FMI", "MS-SSIM")
#: The further metrics of VIFB, MEFB, SeAFusion and Liu et al. (``fusion_literature.py``,
#: ``phase_congruency.py``, ``mef_ssim.py``, ``windowed_fmi.py``).
LITERATURE_FUSION_METRICS: tuple[str, ...] = (
    "CE", "EI", "RMSE", "MSE", "CC", "NMI", "TE", "Qncie", "Qsf", "Qs", "Qw", "Qe",
    "Qc", "Qy", "Qcv", "Qcb", "Nabf", "Labf", "Qp", "Qm", "MEF-SSIM", "FMI_w", "FMI_dct",
    "FMI_pixel", "FMI_g", "FMI_edge",
)  # fmt: skip
#: Every metric, in the column order of ``evaluate-fusion --metrics all``.
ALL_FUSION_METRICS: tuple[str, ...] = (
    FUSION_METRICS + EXTRA_FUSION_METRICS + LITERATURE_FUSION_METRICS
)
#: Per-source metrics that the defining code sums over the sources, and those it averages;
#: ``over_sources="sum" | "mean"`` puts all of them on one footing (the others pool the
#: sources inside the formula and are not affected).
SUMMED_OVER_SOURCES: frozenset[str] = frozenset(
    {"MI", "VIF", "SSIM", "FMI", "MS-SSIM", "NMI", "TE"}
)
AVERAGED_OVER_SOURCES: frozenset[str] = frozenset(
    {"CE", "RMSE", "MSE", "CC", "FMI_w", "FMI_dct", "FMI_pixel", "FMI_g", "FMI_edge"}
)
OVER_SOURCES: tuple[str, ...] = ("default", "sum", "mean")
#: Metrics for which a smaller value is better (Qsf: closer to 0 is better).
LOWER_IS_BETTER: frozenset[str] = frozenset({"CE", "RMSE", "MSE", "Qcv", "Nabf", "Labf"})


def _table(convention: str, data_range: float) -> dict[str, Callable]:
    c, r = convention, data_range
    return {
        "EN": lambda s, f: fm.entropy(f, c, r),
        "SD": lambda s, f: fm.standard_deviation(f),
        "SF": lambda s, f: fm.spatial_frequency(f),
        "AG": lambda s, f: fm.average_gradient(f, c),
        "MI": lambda s, f: fm.mutual_information(s, f, c, r),
        "SCD": lambda s, f: fm.scd(s, f),
        "VIF": lambda s, f: fm.vif(s, f, c, r),
        "Qabf": lambda s, f: fm.qabf(s, f, c),
        "SSIM": lambda s, f: fm.ssim_sum(s, f, c, r),
        "PSNR": lambda s, f: fm.psnr(s, f, c, r),
        "FMI": lambda s, f: fm.fmi(s, f),
        # MS-SSIM has one definition (MONAI's); the standard data range applies to both
        "MS-SSIM": lambda s, f: ms_ssim(s, f, data_range=r if c == "standard" else 255.0),
        "CE": lambda s, f: fl.cross_entropy(s, f, c, r),
        "EI": lambda s, f: fl.edge_intensity(f),
        "RMSE": lambda s, f: fl.rmse(s, f, c),
        "MSE": lambda s, f: fl.mse(s, f, c, r),
        "CC": lambda s, f: fl.correlation_coefficient(s, f),
        "NMI": lambda s, f: fl.normalized_mutual_information(s, f, c, r),
        "TE": lambda s, f: fl.tsallis_entropy(s, f, c, r),
        "Qncie": lambda s, f: fl.q_ncie(s, f, c, r),
        "Qsf": lambda s, f: fl.q_sf(s, f),
        "Qs": lambda s, f: fl.q_s(s, f, c, r),
        "Qw": lambda s, f: fl.q_w(s, f, c, r),
        "Qe": lambda s, f: fl.q_e(s, f, c, r),
        "Qc": lambda s, f: fl.q_c(s, f, c),
        "Qy": lambda s, f: fl.q_y(s, f),
        "Qcv": lambda s, f: fl.q_cv(s, f, c, r),
        "Qcb": lambda s, f: fl.q_cb(s, f, c, r),
        "Nabf": lambda s, f: fl.nabf(s, f),
        "Labf": lambda s, f: fl.labf(s, f),
        "Qp": lambda s, f: q_p(s, f, c, r),
        "Qm": lambda s, f: fl.q_m(s, f, c, r),
        "MEF-SSIM": lambda s, f: mef_ssim(s, f, c, r),
        "FMI_w": lambda s, f: fmi_windowed(s, f, "wavelet", c),
        "FMI_dct": lambda s, f: fmi_windowed(s, f, "dct", c),
        "FMI_pixel": lambda s, f: fmi_windowed(s, f, "none", c),
        "FMI_g": lambda s, f: fmi_windowed(s, f, "gradient", c),
        "FMI_edge": lambda s, f: fmi_windowed(s, f, "edge", c),
    }


def compute_fusion_metrics(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: str = "reference",
    metrics: Sequence[str] | None = None,
    data_range: float = 255.0,
    chunk_size: int | None = None,
    num_workers: int | None = None,
    over_sources: str = "default",
) -> dict[str, torch.Tensor]:
    """Compute fusion metrics for a batch of fused images.

    Args:
        sources: (B, S, H, W) or a sequence of S tensors (B, H, W); SCD needs S == 2.
        fused: (B, H, W) or (B, 1, H, W).
        convention: "reference" (the MIF literature's Python evaluator) or "standard".
        metrics: names from ``ALL_FUSION_METRICS`` (the reference evaluator's ten, FMI,
            MS-SSIM and the literature's further metrics); default the ten reference metrics.
        data_range: peak value of the data (standard convention).
        chunk_size: images processed together; default 1 on CPU (cache friendly: about 5x
            faster than one big batch) and 64 on accelerators.
        num_workers: CPU threads scoring chunks concurrently; default
            ``torch.get_num_threads()``. Only used on CPU with the compiled kernels (they run
            without the GIL); 1 scores the chunks one after the other.
        over_sources: "default" (each metric as its defining code: the reference evaluator
            sums MI, VIF and SSIM; VIFB averages CE and RMSE, ...), "sum" or "mean": every
            per-source metric (``SUMMED_OVER_SOURCES | AVERAGED_OVER_SOURCES``) summed or
            averaged over the S sources (e.g. "mean" gives TDFusion's SSIM and VIF).

    Returns:
        ``{name: (B,) float64 tensor}`` in the order requested.

    Raises:
        ValueError: unknown metric or convention, or mismatching shapes.
    """
    fm._check_convention(convention)
    if over_sources not in OVER_SOURCES:
        raise ValueError(f"over_sources must be one of {OVER_SOURCES}, got {over_sources!r}")
    names = list(FUSION_METRICS if metrics is None else metrics)
    table = _table(convention, data_range)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown fusion metric(s) {unknown}; choose from {list(table)}")
    # float32 CPU inputs stay float32 (each metric converts what it needs, chunk by chunk)
    f, src = fm._inputs(fused, sources)
    if chunk_size is None:
        chunk_size = 1 if f.device.type == "cpu" else 64
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if num_workers is None:
        num_workers = torch.get_num_threads()
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")

    def score(start: int) -> dict[str, torch.Tensor]:
        fs, ss = f[start : start + chunk_size], src[start : start + chunk_size]
        out: dict[str, torch.Tensor] = {}
        shared: dict[str, dict[str, torch.Tensor]] = {}  # metrics computed together
        for n in names:
            if n in ("Qs", "Qw", "Qe"):
                if "piella" not in shared:
                    shared["piella"] = fl.piella(ss, fs, convention, data_range)
                out[n] = shared["piella"][n]
            elif n in ("Nabf", "Labf"):
                if "petrovic" not in shared:
                    shared["petrovic"] = fl.petrovic(ss, fs)
                out[n] = shared["petrovic"][n]
            else:
                out[n] = table[n](ss, fs)
        return out

    starts = range(0, f.shape[0], chunk_size)
    parallel = num_workers > 1 and len(starts) > 1 and f.device.type == "cpu"
    if parallel and _kernels.available():
        with ThreadPoolExecutor(max_workers=min(num_workers, len(starts))) as pool:
            chunks = list(pool.map(score, starts))
    else:
        chunks = [score(start) for start in starts]
    out = {n: torch.cat([c[n] for c in chunks]) for n in names}
    n_src = src.shape[1]
    for n in names:
        if over_sources == "mean" and n in SUMMED_OVER_SOURCES:
            out[n] = out[n] / n_src
        elif over_sources == "sum" and n in AVERAGED_OVER_SOURCES:
            out[n] = out[n] * n_src
    return out


class FusionMetrics:
    """Accumulate fusion metrics over batches (MONAI style).

    Example::

        metric = FusionMetrics(convention="reference")
        for sources, fused in loader:        # (B, S, H, W), (B, H, W)
            metric.update(sources, fused)
        means = metric.aggregate()           # {"EN": tensor(()), ...}
        per_image = metric.values()          # {"EN": (N,) tensor, ...}
    """

    def __init__(
        self,
        convention: str = "reference",
        metrics: Sequence[str] | None = None,
        data_range: float = 255.0,
    ) -> None:
        fm._check_convention(convention)
        self.convention = convention
        self.metrics = list(FUSION_METRICS if metrics is None else metrics)
        self.data_range = data_range
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._parts: dict[str, list[torch.Tensor]] = {n: [] for n in self.metrics}

    def update(
        self, sources: torch.Tensor | Sequence[torch.Tensor], fused: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Score one batch, remember its values and return them (``{name: (B,)}``)."""
        vals = compute_fusion_metrics(
            sources, fused, self.convention, self.metrics, self.data_range
        )
        for n, v in vals.items():
            self._parts[n].append(v.detach().cpu())
        return vals

    def __len__(self) -> int:
        return sum(int(v.numel()) for v in self._parts[self.metrics[0]]) if self.metrics else 0

    def values(self) -> dict[str, torch.Tensor]:
        """Per-image values so far: ``{name: (N,) float64}``."""
        return {
            n: torch.cat(p) if p else torch.zeros(0, dtype=torch.float64)
            for n, p in self._parts.items()
        }

    def aggregate(self, reduction: str = "mean") -> dict[str, torch.Tensor]:
        """Reduce the per-image values with ``"mean"``, ``"std"`` (population) or ``"median"``.

        NaN values (e.g. an undefined SCD) are ignored.
        """
        if reduction not in ("mean", "std", "median"):
            raise ValueError(f"reduction must be mean, std or median, got {reduction!r}")
        if len(self) == 0:
            raise ValueError("FusionMetrics.aggregate() called before any update()")
        out = {}
        for n, v in self.values().items():
            ok = v[~torch.isnan(v)]
            if reduction == "mean":
                out[n] = ok.mean()
            elif reduction == "std":
                out[n] = ok.std(correction=0)
            else:
                out[n] = ok.median()
        return out
