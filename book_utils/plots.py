"""The book's figures: image grids, training curves, confusion matrices, filters and feature maps.

Every function draws one titled figure with labelled axes and returns it.
"""
from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np

RUN_STAMP = ""  # set by book_utils.setup(): mode, hardware and date of the run that drew the figure


def finish(fig, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None):
    """Title the figure, label grids of small images, stamp it with the run it came from, lay it out."""
    if title:
        fig.suptitle(title)
    if xlabel:
        fig.supxlabel(xlabel, fontsize=9)
    if ylabel:
        fig.supylabel(ylabel, fontsize=9)
    if RUN_STAMP:
        fig.text(0.995, 0.002, RUN_STAMP, ha="right", va="bottom", fontsize=6, color="gray")
    if fig.get_layout_engine() is None:
        with warnings.catch_warnings():  # colour bars spanning several axes are laid out well enough
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout(rect=(0, 0.03 if RUN_STAMP else 0, 1, 1))
    return fig


def image_grid(images, labels, class_names, *, predicted=None, ncols: int = 10, title: str = "Samples",
               scale: float = 1.3):
    """A grid of images captioned with their labels (and, if given, the predicted labels in red when wrong).

    Small photos are drawn pixel for pixel (no smoothing), so that what you see is what the network sees."""
    images = np.asarray(images)
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    row_height = scale * (1.2 if predicted is None else 1.45)  # room for one or two caption lines
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, row_height * nrows + 0.7), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        image = images[i]
        ax.imshow(image.squeeze(), cmap="gray" if image.ndim == 2 or image.shape[-1] == 1 else None,
                  interpolation="nearest")
        caption = class_names[labels[i]]
        color = "black"
        if predicted is not None:
            caption = f"{class_names[labels[i]]}\n→ {class_names[predicted[i]]}"
            color = "black" if predicted[i] == labels[i] else "crimson"
        ax.set_title(caption, fontsize=9, color=color)
    if predicted is None:
        return finish(fig, title, xlabel="each image captioned with its label")
    return finish(fig, f"{title} (true → predicted)", xlabel="each image captioned with its true label → the prediction")


def augmentation_grid(images, augment, *, row_labels, variants: int = 6, title: str = "Augmentation",
                      scale: float = 1.4):
    """Each row: one image as it is, then `variants` random augmentations of it (augment(batch, training=True))."""
    images = np.asarray(images)
    fig, axes = plt.subplots(len(images), variants + 1, figsize=(scale * (variants + 1), scale * len(images) + 0.8),
                             squeeze=False, layout="constrained")
    for row, image in enumerate(images):
        batch = np.repeat(image[None].astype("float32"), variants, axis=0)
        shown = [image] + list(np.asarray(augment(batch, training=True)).clip(0, 255).astype("uint8"))
        for col, picture in enumerate(shown):
            ax = axes[row, col]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("original" if col == 0 else f"random {col}", fontsize=9)
        axes[row, 0].set_ylabel(row_labels[row], fontsize=9)
    return finish(fig, title, xlabel="each row: one training photo, then random versions of it made while training")


def compare_curves(histories: dict, *, metric: str = "val_accuracy", title: str, ylabel: str = "validation accuracy"):
    """One metric per epoch for several runs on one chart (e.g. the steps of an experiment)."""
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    for name, history in histories.items():
        values = history[metric]
        ax.plot(np.arange(1, len(values) + 1), values, "o-", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return finish(fig, title)


def training_curves(history: dict, *, title: str = "Training curves"):
    """Loss and accuracy per epoch, training and validation side by side."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.8))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.plot(epochs, history[metric], "o-", label=f"training {metric}")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], "s--", label=f"validation {metric}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric.capitalize())
        ax.grid(alpha=0.3)
        ax.legend()
    return finish(fig, title)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def plot_confusion_matrix(matrix, class_names, *, title: str = "Confusion matrix"):
    """The confusion matrix as a heat map with the count in every cell."""
    matrix = np.asarray(matrix)
    size = 0.55 * len(class_names) + 2
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    threshold = matrix.max() / 2
    for i in ticks:
        for j in ticks:
            ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="test images")
    return finish(fig)


def per_class_bars(values: dict, class_names, *, title: str, ylabel: str = "test accuracy"):
    """Grouped bars: one group per class, one bar per series. values = {series name: per-class values}."""
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / len(values)
    positions = np.arange(len(class_names))
    for k, (name, series) in enumerate(values.items()):
        ax.bar(positions + k * width - 0.4 + width / 2, series, width, label=name)
    ax.set_xticks(positions, class_names, rotation=30, ha="right")
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return finish(fig)


def filters(kernels, *, title: str = "Learned filters", ncols: int = 8):
    """Show conv kernels of shape (kh, kw, in, out): the first input channel of each filter, or RGB if in == 3."""
    kernels = np.asarray(kernels)
    n = kernels.shape[-1]
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 * ncols, 1.3 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        k = kernels[..., i]
        if k.shape[-1] == 3:
            k = (k - k.min()) / (k.max() - k.min() + 1e-9)
            ax.imshow(k)
        else:
            ax.imshow(k[..., 0], cmap="RdBu_r", vmin=-abs(k).max(), vmax=abs(k).max())
        ax.set_title(f"filter {i}", fontsize=7)
    colours = "colour: the RGB weights, rescaled" if kernels.shape[-2] == 3 else "red: positive weight, blue: negative"
    return finish(fig, title, xlabel=f"kernel column ({colours})", ylabel="kernel row")


def feature_maps(maps, *, title: str = "Feature maps", ncols: int = 8, limit: int = 32):
    """Show the channels of one activation tensor of shape (h, w, channels)."""
    maps = np.asarray(maps)
    n = min(maps.shape[-1], limit)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 * ncols, 1.3 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(maps[..., i], cmap="viridis")
            ax.set_title(f"channel {i}", fontsize=7)
    return finish(fig, title, xlabel="column of the feature map", ylabel="row")


def bubble_chart(rows, *, title: str, x: str = "macs", xlabel: str = "multiply-accumulates per image (log scale)"):
    """Accuracy against cost, one bubble per model: area ~ parameters, one colour per data set (MobileNets' Fig.).

    rows: dicts with "model", "params", "test_accuracy", "data" and the x key (default "macs").
    """
    fig, ax = plt.subplots(figsize=(10, 5.5))
    datasets = sorted({r["data"] for r in rows})
    colours = dict(zip(datasets, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    biggest = max([r["params"] for r in rows] or [1])
    for data in datasets:
        group = [r for r in rows if r["data"] == data]
        ax.scatter([r[x] for r in group], [r["test_accuracy"] for r in group], alpha=0.45, edgecolors="black",
                   s=[40 + 2000 * r["params"] / biggest for r in group], color=colours[data], label=data)
    for r in rows:
        ax.annotate(r["model"], (r[x], r["test_accuracy"]), xytext=(6, 6), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.3, y=0.15)  # room for the bubbles and their labels
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if rows:
        legend = ax.legend(title="data (bubble area ~ parameters)", fontsize=8, title_fontsize=8, loc="best")
        for handle in legend.legend_handles:
            handle.set_sizes([60])
    return finish(fig)


def accuracy_cost_panels(rows, *, title: str, x: str = "macs", xlabel: str = "multiply-accumulates per image (log scale)",
                         xscale: float = 1.0):
    """Accuracy against cost, one panel per data set (different test sets share no accuracy axis), one bubble
    per model with its area ~ parameters (one scale for all panels). Each label sits above or below its bubble
    on a thin leader line, and moves further out until it overlaps no other label and no bubble. A row with
    "same_budget" False is drawn hollow and dashed.

    rows: dicts with "model", "params", "test_accuracy", "data" and the x key; x values are divided by xscale.
    """
    datasets = sorted({r["data"] for r in rows})
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(6.2 * max(1, len(datasets)), 5.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    biggest = max([r["params"] for r in rows] or [1])
    panels = []
    for ax, data, colour in zip(axes.flat, datasets, colours):
        group = sorted((r for r in rows if r["data"] == data), key=lambda r: r[x])
        labels, bubbles = [], []
        for k, r in enumerate(group):
            hollow = r.get("same_budget") is False
            point, size = (r[x] / xscale, r["test_accuracy"]), 40 + 2000 * r["params"] / biggest
            ax.scatter(*point, s=size, alpha=0.5, color="none" if hollow else colour,
                       edgecolors=colour if hollow else "black", linestyle="--" if hollow else "-", linewidths=1.2)
            name = r["model"].replace(" (", "\n(", 1)  # a long name on two lines
            labels.append(ax.annotate(name, point, xytext=(0, 20 if k % 2 == 0 else -20), textcoords="offset points",
                                      ha="center", va="bottom" if k % 2 == 0 else "top", fontsize=8,
                                      arrowprops=dict(arrowstyle="-", color="gray", lw=0.6)))
            bubbles.append((point, size))
        ax.set_xscale("log")
        ax.margins(x=0.4, y=0.4)  # room for the bubbles and their labels
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test accuracy on {data}")
        ax.set_title(f"{data} models", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        panels.append((ax, labels, bubbles))
    if any(r.get("same_budget") is False for r in rows):
        fig.text(0.01, 0.005, "hollow, dashed: not trained with this chapter's data, recipe and epochs",
                 fontsize=7, color="gray", ha="left", va="bottom")
    finish(fig, title)
    for ax, labels, bubbles in panels:  # once the layout is final, so that the overlaps are the drawn ones
        _separate_labels(fig, ax, labels, bubbles)
    return fig


def _separate_labels(fig, ax, labels, bubbles, step: float = 4.0, rounds: int = 60):
    """Keep annotations clear of each other and of the bubbles: a label near an edge of the panel is aligned
    inwards; of two labels that overlap, the later one moves further from its bubble (up if it sits above,
    down if below), and so does a label over a bubble, a few points at a time, until nothing overlaps."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    for label in labels:
        across = ax.transAxes.inverted().transform(ax.transData.transform(label.xy))[0]
        label.set_ha("left" if across < 0.25 else "right" if across > 0.75 else "center")
    pixels = fig.dpi / 72
    discs = []
    for point, size in bubbles:
        cx, cy = ax.transData.transform(point)
        r = 0.5 * size ** 0.5 * pixels
        discs.append(Bbox.from_extents(cx - r, cy - r, cx + r, cy + r))
    for _ in range(rounds):
        for label in labels:
            label.update_positions(renderer)
        boxes = [Text.get_window_extent(label, renderer).padded(3 * pixels) for label in labels]  # the text alone
        clashes = {j for i in range(len(labels)) for j in range(i + 1, len(labels)) if boxes[i].overlaps(boxes[j])}
        clashes |= {j for j, box in enumerate(boxes) if any(box.overlaps(disc) for disc in discs)}
        if not clashes:
            return
        for j in clashes:
            dx, dy = labels[j].xyann
            labels[j].xyann = (dx, dy + (step if dy >= 0 else -step))
