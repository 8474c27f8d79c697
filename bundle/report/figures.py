"""Figures: a contact sheet of radiographs with their boxes, and a gallery of saliency maps per method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def contact_sheet(
    images: Sequence[np.ndarray],
    boxes: Sequence[Sequence[Sequence[float]]],
    titles: Sequence[str],
    path: str | Path,
    columns: int = 6,
) -> Path:
    """Save a grid of grayscale images with their (x, y, w, h) boxes outlined in red."""
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, image_boxes, title in zip(axes.flat, images, boxes, titles):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="lanczos")
        for x, y, w, h in image_boxes:
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="red", linewidth=1.0))
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def saliency_gallery(
    images: np.ndarray,
    masks: np.ndarray,
    maps: dict[str, np.ndarray],
    image_ids: Sequence[str],
    path: str | Path,
) -> Path:
    """Save a grid: one row per image (with its lesion outlined), one column per method's normalised map.

    ``images`` and ``masks`` are (N, H, W); ``maps`` maps a column title to (N, H, W)
    maps already normalised to [0, 1] the way the study scores them. Volumes (N, D, H, W) are shown by the slice
    with the most lesion voxels (the middle one without a lesion), its index in the row label.
    """
    labels = [str(i)[-12:] for i in image_ids]
    if images.ndim == 4:
        slices = [int(np.argmax(m.reshape(len(m), -1).sum(1))) if m.any() else len(m) // 2 for m in masks > 0.5]
        rows = np.arange(len(images))
        images, masks = images[rows, slices], masks[rows, slices]
        maps = {name: m[rows, slices] for name, m in maps.items()}
        labels = [f"{label} z={z}" for label, z in zip(labels, slices)]
    n, columns = len(images), 1 + len(maps)
    fig, axes = plt.subplots(n, columns, figsize=(1.5 * columns, 1.6 * n), squeeze=False)
    for row in range(n):
        panels = [("image", None)] + [(name, m[row]) for name, m in maps.items()]
        for ax, (title, saliency) in zip(axes[row], panels):
            ax.imshow(images[row], cmap="gray", vmin=0, vmax=1)
            if saliency is not None:
                ax.imshow(saliency, cmap="inferno", vmin=0, vmax=1, alpha=0.6)
            ax.contour(masks[row] > 0.5, levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
        axes[row][0].set_ylabel(labels[row], fontsize=6)
    fig.tight_layout(pad=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def randomization_curves(summary, criterion: str, path: str | Path, metric: str = "ssim",
                         baseline_metric: str = "unrelated_ssim") -> Path | None:
    """One panel per map source: mean ``metric`` (95% CI band) per randomisation step, one line per model,
    and each model's unrelated-pairs baseline as a dashed line, as the randomisation studies plot it."""
    rows = summary[summary.criterion == criterion]
    steps = rows[rows.metric == metric]
    if steps.empty:
        return None
    sources = list(dict.fromkeys(steps.method))
    columns = min(4, len(sources))
    n_rows = int(np.ceil(len(sources) / columns))
    fig, axes = plt.subplots(n_rows, columns, figsize=(3.2 * columns, 2.6 * n_rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(sources):]:
        ax.axis("off")
    for ax, source in zip(axes.flat, sources):
        for colour, (model, curve) in zip(("C0", "C1", "C2", "C3"), steps[steps.method == source].groupby(
                "model", sort=False)):
            x = np.arange(1, len(curve) + 1)
            ax.plot(x, curve["mean"], "o-", color=colour, markersize=3, label=model)
            ax.fill_between(x, curve.ci_low, curve.ci_high, color=colour, alpha=0.2)
            base = rows[(rows.method == source) & (rows.model == model) & (rows.metric == baseline_metric)]
            if len(base):
                ax.axhline(float(base["mean"].iloc[0]), color=colour, linestyle="--", linewidth=0.8)
            ax.set_xticks(x)
        ax.set_title(source, fontsize=9)
        ax.set_ylim(-0.1, 1.05)
    axes[0][0].set_ylabel(f"{metric} to trained map")
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"{criterion}: {metric} per step (dashed: unrelated-pairs baseline)", fontsize=9)
    legend = [f"{model}: " + ", ".join(f"{i} {s.split(':')[-1]}" for i, s in enumerate(dict.fromkeys(g.step), 1))
              for model, g in steps.groupby("model", sort=False)]
    fig.text(0.01, 0.005, "steps, output to input. " + "; ".join(legend), fontsize=6, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _panels(n: int, width: float = 3.2, height: float = 2.6, columns: int = 4, **kwargs):
    """A grid of ``n`` panels (the unused ones hidden)."""
    columns = min(columns, n)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False, **kwargs)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pic_curves_figure(summary, records, criterion: str, path: str | Path, baseline: str = "random",
                      reference: str = "oracle") -> Path | None:
    """One panel per map source: its point-wise median SIC and AIC curves (95% bootstrap band), with the
    random-map baseline dashed and the oracle dotted, as Kapishnikov et al. plot performance information curves."""
    rows = summary[(summary.criterion == criterion) & summary.metric.str.endswith("_median_curve")]
    if rows.empty:
        return None
    sources = [s for s in dict.fromkeys(rows.method) if s not in (baseline, reference)]
    fig, axes = _panels(len(sources), sharex=True, sharey=True)
    area = {(r.method, r.metric): r.mean for r in summary[(summary.criterion == criterion)
                                                         & summary.metric.str.endswith("_median_auc")].itertuples()}
    for ax, source in zip(axes.flat, sources):
        for colour, metric in zip(("C0", "C3"), dict.fromkeys(rows.metric)):
            kind = metric.split("_")[0]

            def curve(name):
                c = rows[(rows.method == name) & (rows.metric == metric)]
                return c.step.str.split(":").str[-1].astype(float).to_numpy(), c

            x, c = curve(source)
            label = f"{kind.upper()} {area.get((source, f'{kind}_median_auc'), np.nan):.2f}"
            ax.plot(x, c["mean"], color=colour, label=label)
            ax.fill_between(x, c.ci_low, c.ci_high, color=colour, alpha=0.2)
            for name, style in ((baseline, "--"), (reference, ":")):
                bx, b = curve(name)
                if len(b):
                    ax.plot(bx, b["mean"], color=colour, linestyle=style, linewidth=0.8)
        ax.set_title(source, fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
    for ax in axes[-1]:
        ax.set_xlabel("information fraction (WebP)", fontsize=7)
    axes[0][0].set_ylabel("normalised score")
    fig.suptitle(f"{criterion}: median performance information curves (area in the legend; dashed {baseline}, "
                 f"dotted {reference})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def psc_scatter(summary, records, criterion: str, path: str | Path) -> Path | None:
    """One panel per map source: JSD_pred against JSD_map per image, one colour per attack, PSC in the legend."""
    mine = records[(records.criterion == criterion) & records.metric.str.endswith("_jsd_pred")]
    if mine.empty:
        return None
    attacks = [m[: -len("_jsd_pred")] for m in dict.fromkeys(mine.metric)]
    sources = list(dict.fromkeys(mine.method))
    value = {(r.method, r.metric): r.mean for r in summary[summary.criterion == criterion].itertuples()}
    fig, axes = _panels(len(sources))
    for ax, source in zip(axes.flat, sources):
        rows = records[(records.criterion == criterion) & (records.method == source)]
        for colour, attack in zip(("C0", "C3"), attacks):
            x = rows[rows.metric == f"{attack}_jsd_pred"].sort_values("image_id").value
            y = rows[rows.metric == f"{attack}_jsd_map"].sort_values("image_id").value
            ax.scatter(x, y, s=10, color=colour, label=f"{attack} PSC {value.get((source, attack), np.nan):.2f}")
        ax.set_title(source, fontsize=9)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("JSD_pred", fontsize=7)
    for row in axes:
        row[0].set_ylabel("JSD_map", fontsize=7)
    fig.suptitle(f"{criterion}: prediction vs map divergence under attack, per image", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _style(i: int) -> tuple[str, str]:
    """The i-th series' colour and marker: matplotlib's ten colours, then the same colours with the next marker."""
    return f"C{i % 10}", "os^D"[i // 10 % 4]


def epoch_trust_curves(summary, path: str | Path) -> Path | None:
    """One panel per trust metric measured during training: its mean (95% bootstrap band) per epoch, one line per
    method (``summary``: epoch, criterion, metric, method, mean, ci_low, ci_high)."""
    if summary.empty:
        return None
    panels = list(dict.fromkeys(zip(summary.criterion, summary.metric)))
    fig, axes = _panels(len(panels), width=3.0, height=2.4, sharex=True)
    for ax, (criterion, metric) in zip(axes.flat, panels):
        rows = summary[(summary.criterion == criterion) & (summary.metric == metric)]
        for i, (method, curve) in enumerate(rows.groupby("method", sort=False)):
            colour, marker = _style(i)
            ax.plot(curve.epoch, curve["mean"], marker + "-", color=colour, markersize=3, label=method)
            ax.fill_between(curve.epoch, curve.ci_low, curve.ci_high, color=colour, alpha=0.2)
        ax.set_title(f"{criterion}/{metric}", fontsize=8)
        ax.set_ylim(-0.05, 1.05)
        ax.tick_params(labelsize=6)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.suptitle("saliency trust during training (mean over the saliency set, 95% bootstrap band)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def agreement_scatter(summary, path: str | Path, x_criterion: str = "repeatability",
                      y_criterion: str = "reproducibility", metric: str = "iou", readers: str = "readers") -> Path | None:
    """Each map source's mean agreement between two seeds (x) against its agreement between two architectures (y),
    95% CI bars, the second reader's agreement with the ground truth dashed on both axes (what a method should
    reach) and the weak-pass line 0.5 dotted."""
    rows = summary[summary.metric == metric]
    x = rows[rows.criterion == x_criterion].set_index("method")
    y = rows[rows.criterion == y_criterion].set_index("method")
    sources = [s for s in x.index if s in y.index and s != readers]
    if not sources:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for i, source in enumerate(sources):
        a, b = x.loc[source], y.loc[source]
        colour, marker = _style(i)
        ax.errorbar(a["mean"], b["mean"], xerr=[[a["mean"] - a.ci_low], [a.ci_high - a["mean"]]],
                    yerr=[[b["mean"] - b.ci_low], [b.ci_high - b["mean"]]], fmt=marker, markersize=4, capsize=2,
                    color=colour, label=source)
    if readers in x.index:
        ax.axvline(float(x.loc[readers, "mean"]), color="grey", linestyle="--", linewidth=0.8)
        ax.axhline(float(x.loc[readers, "mean"]), color="grey", linestyle="--", linewidth=0.8)
    for line in (ax.axvline, ax.axhline):
        line(0.5, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"{x_criterion}: {metric} between two seeds", fontsize=8)
    ax.set_ylabel(f"{y_criterion}: {metric} between two architectures", fontsize=8)
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    ax.set_title(f"agreement of binarised maps (dashed: {readers} vs ground truth; dotted: 0.5)", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
