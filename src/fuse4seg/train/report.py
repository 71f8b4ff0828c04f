"""Training curves (PNG) and self-contained HTML reports (tables + figures).

Reusable by the benchmark: :func:`html_table` renders a methods x metrics table,
:func:`plot_slice_grid` draws example slices (source modalities, fused images, ground truth
and predictions overlaid) and :func:`write_html_report` embeds everything (PNG as base64)
in one file. Matplotlib runs with the non-interactive Agg backend.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fuse4seg.io.atomic import atomic_path

__all__ = [
    "LABEL_COLOURS",
    "read_metrics",
    "plot_training_curves",
    "plot_validation_comparison",
    "overlay_labels",
    "plot_slice_grid",
    "html_table",
    "write_html_report",
]

#: RGB colour of each canonical label in overlays (NCR red, ED green, ET yellow)
LABEL_COLOURS: dict[int, tuple[float, float, float]] = {
    1: (0.90, 0.10, 0.10),
    2: (0.10, 0.80, 0.20),
    3: (1.00, 0.85, 0.00),
}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: str | Path) -> None:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` (lines that are not JSON objects are skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def plot_training_curves(
    metrics: str | Path | Sequence[dict[str, Any]], out_png: str | Path, title: str = ""
) -> None:
    """Two panels: training losses vs optimiser step, validation Dice vs step."""
    records = read_metrics(metrics) if isinstance(metrics, (str, Path)) else list(metrics)
    plt = _plt()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    train = [r for r in records if r.get("type") == "train"]
    keys = sorted({k for r in train for k in r if k.endswith(("seg", "upper"))})
    for key in keys:
        pts = [(r["step"], r[key]) for r in train if isinstance(r.get(key), (int, float))]
        if pts:
            ax_loss.plot(*zip(*pts, strict=True), label=key)
    ax_loss.set_xlabel("optimiser step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title(f"{title} training losses".strip())
    if keys:
        ax_loss.legend(fontsize=7)
    val = [r for r in records if r.get("type") == "val"]
    for key in ("NCR", "ED", "ET", "mean"):
        pts = [(r["step"], r[key]) for r in val if isinstance(r.get(key), (int, float))]
        if pts:
            ax_val.plot(
                *zip(*pts, strict=True), marker="o", label=key, lw=2 if key == "mean" else 1
            )
    ax_val.set_xlabel("optimiser step")
    ax_val.set_ylabel("validation Dice")
    ax_val.set_ylim(0, 1)
    ax_val.set_title(f"{title} validation".strip())
    if val:
        ax_val.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, out_png)


def plot_validation_comparison(
    runs: Mapping[str, str | Path | Sequence[dict[str, Any]]], out_png: str | Path
) -> None:
    """Validation mean Dice vs epoch of several runs (``{method: metrics.jsonl}``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, metrics in runs.items():
        records = read_metrics(metrics) if isinstance(metrics, (str, Path)) else list(metrics)
        pts = [(r["epoch"] + 1, r["mean"]) for r in records if r.get("type") == "val"]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mean Dice (NCR, ED, ET)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, out_png)


def overlay_labels(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Grey ``image (H, W)`` in [0, 1] with canonical ``labels (H, W)`` blended in -> RGB."""
    img = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    rgb = np.repeat(img[..., None], 3, axis=-1)
    for lab, colour in LABEL_COLOURS.items():
        mask = np.asarray(labels) == lab
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour, dtype=np.float32)
    return rgb


def plot_slice_grid(rows: Sequence[Mapping[str, Any]], out_png: str | Path) -> None:
    """One row per example slice.

    Each row: ``{"title": str, "sources": {modality: (H, W)}, "fused": {method: (H, W) |
    None}, "gt": (H, W), "preds": {method: (H, W)}}``. Columns: sources, fused images,
    ground truth overlay, then one prediction overlay per method (on the first source).
    """
    if not rows:
        raise ValueError("plot_slice_grid needs at least one row")
    plt = _plt()
    columns: list[tuple[str, str, str | None]] = []
    first = rows[0]
    columns += [("source", m, None) for m in first["sources"]]
    columns += [("fused", m, None) for m, f in first.get("fused", {}).items() if f is not None]
    columns += [("gt", "ground truth", None)]
    columns += [("pred", m, None) for m in first.get("preds", {})]
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(1.9 * len(columns), 2.0 * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        base = next(iter(row["sources"].values()))
        for c, (kind, name, _) in enumerate(columns):
            ax = axes[r, c]
            if kind == "source":
                ax.imshow(row["sources"][name], cmap="gray", vmin=0, vmax=1)
            elif kind == "fused":
                ax.imshow(row["fused"][name], cmap="gray", vmin=0, vmax=1)
                name = f"fused: {name}"
            elif kind == "gt":
                ax.imshow(overlay_labels(base, row["gt"]))
            else:
                ax.imshow(overlay_labels(base, row["preds"][name]))
                name = f"pred: {name}"
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
            if c == 0 and row.get("title"):  # horizontal, readable: "case\nz=..."
                ax.set_ylabel(
                    row["title"].replace(" z=", "\nz="),
                    fontsize=9,
                    rotation=0,
                    ha="right",
                    va="center",
                    labelpad=4,
                )
    fig.tight_layout()
    _save_figure(fig, out_png)


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return html.escape(str(value))


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    caption: str = "",
    digits: int = 3,
    bold_max_columns: Sequence[int] = (),
    bold_min_columns: Sequence[int] = (),
) -> str:
    """An HTML ``<table>``; the best value is bold: the largest in ``bold_max_columns``
    (higher is better, e.g. Dice), the smallest in ``bold_min_columns`` (e.g. HD95)."""
    best = {}
    for columns, pick in ((bold_max_columns, max), (bold_min_columns, min)):
        for c in columns:
            vals = [r[c] for r in rows if isinstance(r[c], (int, float)) and r[c] == r[c]]
            if vals:
                best[c] = pick(vals)
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for c, value in enumerate(row):
            text = _fmt(value, digits)
            if c in best and value == best[c]:
                text = f"<b>{text}</b>"
            cells.append(f"<td>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img_tag(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_html_report(
    path: str | Path,
    title: str,
    sections: Sequence[Mapping[str, Any]],
) -> None:
    """Write a self-contained HTML report atomically.

    Each section: ``{"heading": str, "text": str (optional), "html": str (optional, e.g.
    :func:`html_table`), "images": [(png_path, caption), ...] (optional)}``.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;}"
        "table{border-collapse:collapse;margin:1em 0;}td,th{border:1px solid #999;"
        "padding:3px 8px;text-align:right;}th{background:#eee;}caption{font-weight:bold;"
        "text-align:left;}img{max-width:100%;}figure{margin:1em 0;}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.get('heading', ''))}</h2>")
        if sec.get("text"):
            parts.append(f"<p>{html.escape(sec['text'])}</p>")
        if sec.get("html"):
            parts.append(sec["html"])
        for png, caption in sec.get("images", []):
            parts.append(
                f"<figure>{_img_tag(png, caption)}"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
