"""The report's figures, drawn with matplotlib (the ``dukd[report]`` extra), as PNG bytes.

* :func:`curves`: every loss term and the validation PSNR against iterations, runs overlaid;
* :func:`agreement`: student-vs-teacher PSNR per run on the training patches and the benchmark
  set(s) (the paper's Fig. 5), and over training where it was logged;
* :func:`crops`: the paper's Fig. 6, HR / bicubic / each student / teacher side by side with each
  crop's PSNR, beside the whole image with the crop marked.

Figures use the non-interactive Agg backend, labelled axes with units, legends, 11 pt text and a
fixed palette (one colour per run in every figure); they print well on white paper.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from dukd_cli.errors import DukdError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
DPI = 110


def require_matplotlib():
    """pyplot on the Agg backend, or one clear error line."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise DukdError("dukd report draws its figures with matplotlib: pip install 'dukd[report]'") from None
    plt.rcParams.update(
        {
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.fontsize": 10,
            "xtick.labelsize": 10,
            "ytick.labelsize": 10,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "figure.facecolor": "white",
            "savefig.facecolor": "white",
        }
    )
    return plt


def colours(labels: list[str]) -> dict[str, str]:
    return {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(labels)}


def _png(fig: Figure) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plain_log_labels(ax: Axes) -> None:
    """Log-axis labels as plain decimals (0.05, not 5 x 10^-2): easier to read, and no slow mathtext."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    lo, hi = ax.get_ylim()
    if lo <= 0 or math.log10(hi / lo) >= 1.6:
        ax.yaxis.set_minor_formatter(NullFormatter())
        return
    # At most about one decade shown: label the 2x and 5x ticks too, or every tick if that is still < 2.
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
    ]
    leads = (2, 5) if sum(lo <= t <= hi for t in ticks) >= 2 else tuple(range(2, 10))

    def minor(v: float, _pos: int | None) -> str:
        lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9)) if v > 0 else 0
        return f"{v:g}" if lead in leads else ""

    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _grid(n: int, cols: int = 3) -> tuple[int, int]:
    cols = min(cols, max(1, n))
    return -(-n // cols), cols


LOSS_NAMES = {
    "loss": "total loss",
    "rec": "rec: |S(LR) - HR|",
    "kd": "kd: |S(LR) - T(LR)|",
    "zi_kd": "zi_kd: zoom-in vs teacher",
    "zo_kd": "zo_kd: zoom-out vs teacher",
    "zo_pix": "zo_pix: zoom-out vs LR",
}


def curves(runs: list[dict[str, Any]]) -> bytes | None:
    """Loss terms (weighted L1, log scale) and validation PSNR vs iteration; ``None`` with nothing logged."""
    plt = require_matplotlib()
    col = colours([r["label"] for r in runs])
    terms: list[str] = []
    for r in runs:
        for k in r["losses"]:
            if k not in terms:
                terms.append(k)
    terms.sort(key=lambda k: (k != "loss", list(LOSS_NAMES).index(k) if k in LOSS_NAMES else 99, k))
    panels = terms + (["val_psnr"] if any(r["val_psnr"] for r in runs) else [])
    if not panels:
        return None
    rows, cols = _grid(len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, panels, strict=False):
        for r in runs:
            pts = r["val_psnr"] if key == "val_psnr" else r["losses"].get(key, [])
            if not pts:
                continue
            x, y = zip(*pts, strict=True)
            ax.plot(
                x,
                y,
                color=col[r["label"]],
                label=r["label"],
                lw=1.6,
                marker="o" if key == "val_psnr" else None,
                ms=4,
            )
        ax.set_xlabel("iteration")
        if key == "val_psnr":
            bench = next((r["val_bench"] for r in runs if r.get("val_bench")), "validation")
            ax.set_title(f"validation PSNR ({bench}, EMA weights)")
            ax.set_ylabel("PSNR on Y (dB)")
        else:
            ax.set_title(LOSS_NAMES.get(key, key))
            ax.set_ylabel("weighted L1 (log scale)")
            ax.set_yscale("log")
            plain_log_labels(ax)
        ax.legend(loc="best")
    fig.tight_layout()
    return _png(fig)


def agreement(runs: list[dict[str, Any]], rows: list[dict[str, Any]], benches: list[str]) -> bytes | None:
    """Bars: final student-vs-teacher PSNR per run on the training patches and each set; lines: the
    logged values over training. ``None`` when there is nothing to draw."""
    plt = require_matplotlib()
    labels = [r["label"] for r in runs]
    col = colours(labels)
    students = {r["model"]: r for r in rows if r["kind"] == "student"}
    groups = ["training patches", *benches]
    bars = {lab: [] for lab in labels}
    for lab in labels:
        row = students.get(lab)
        bars[lab].append(row.get("agree_train_psnr") if row else None)
        for b in benches:
            res = (row or {}).get("results", {}).get(b, {})
            bars[lab].append(res.get("agree_psnr"))
    have_bars = any(v is not None for vs in bars.values() for v in vs)
    logged = [r for r in runs if r["agree_train_psnr"] or r["agree_val_psnr"]]
    n = int(have_bars) + int(bool(logged))
    if not n:
        return None
    fig, axes = plt.subplots(1, n, figsize=(6.4 * n, 3.9), squeeze=False)
    ax_i = 0
    if have_bars:
        ax = axes[0, ax_i]
        ax_i += 1
        width = 0.8 / max(1, len(labels))
        x = np.arange(len(groups))
        lo = min(v for vs in bars.values() for v in vs if v is not None)
        for i, lab in enumerate(labels):
            vals = [v if v is not None else np.nan for v in bars[lab]]
            pos = x - 0.4 + width * (i + 0.5)
            ax.bar(pos, vals, width, color=col[lab], label=lab)
            for px, v in zip(pos, vals, strict=True):
                if np.isfinite(v):
                    ax.text(px, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8.5)
        ax.set_xticks(x, groups)
        hi = max(v for vs in bars.values() for v in vs if v is not None)
        ax.set_ylim(max(0.0, lo - 3.0), hi + 0.35 * (hi - max(0.0, lo - 3.0)))
        ax.set_ylabel("PSNR student vs teacher (dB)")
        ax.set_title("agreement with the teacher (final weights)")
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper center", ncols=min(4, len(labels)), frameon=False)
    if logged:
        ax = axes[0, ax_i]
        for r in logged:
            for key, style, what in (
                ("agree_train_psnr", "-", "train patches"),
                ("agree_val_psnr", "--", "val set"),
            ):
                if r[key]:
                    xs, ys = zip(*r[key], strict=True)
                    ax.plot(
                        xs,
                        ys,
                        style,
                        color=col[r["label"]],
                        lw=1.6,
                        marker="o",
                        ms=3.5,
                        label=f"{r['label']}, {what}",
                    )
        bench = next((r["val_bench"] for r in logged if r.get("val_bench")), "validation")
        ax.set_title(f"agreement over training (solid: training patches, dashed: {bench})")
        ax.set_xlabel("iteration")
        ax.set_ylabel("PSNR student vs teacher (dB)")
        ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def crops(
    crop: dict[str, Any], pixels: dict[str, np.ndarray], order: list[str], names: dict[str, str]
) -> bytes:
    """One row: the whole HR image with the box, then the crop as HR, bicubic, students, teacher."""
    plt = require_matplotlib()
    from matplotlib.patches import Rectangle

    keys = [k for k in order if k in pixels]
    fig, axes = plt.subplots(
        1,
        1 + len(keys),
        figsize=(2.3 * (1 + len(keys)) + 1.2, 2.9),
        gridspec_kw={"width_ratios": [1.6] + [1] * len(keys)},
    )
    full = pixels["full"]
    axes[0].imshow(full)
    axes[0].add_patch(Rectangle((crop["x"], crop["y"]), crop["w"], crop["h"], fill=False, ec="#ff0000", lw=2))
    axes[0].set_title(f"{crop['bench']}/{crop['image']}", fontsize=13)
    for ax, k in zip(axes[1:], keys, strict=True):
        ax.imshow(pixels[k], interpolation="nearest")
        p = crop["psnr"].get(k)
        ax.set_title(
            names.get(k, k) + ("\n(reference)" if k == "HR" else f"\n{p:.2f} dB" if p is not None else "\n-"),
            fontsize=13,
        )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.tight_layout()
    return _png(fig)
