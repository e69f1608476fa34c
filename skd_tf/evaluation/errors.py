"""Where a segmentation's wrong pixels are: whole objects misread, objects split, edges, background.

mIoU says how many pixels are wrong, not whether a student gets whole objects wrong (a recognition
error: what pixel-wise and holistic distillation address) or labels one object with several classes (a
structure error: what pair-wise distillation addresses, by making pixels of one object alike). This
module splits the wrong pixels by kind, object by object.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

KINDS = ("whole_object", "split", "edge", "spill")
COUNTS = KINDS + ("scored", "wrong", "objects", "objects_misread")
_EIGHT_NEIGHBOURS = np.ones((3, 3), bool)


def error_counts(labels: np.ndarray, predictions: np.ndarray, num_classes: int, background: int | None = 0,
                 ignore_label: int = 255) -> dict[str, int]:
    """Counts of the wrong pixels of a batch of B×H×W ``labels`` and ``predictions``, by kind.

    An *object* is a connected region (8-neighbourhood) of one ground-truth class other than
    ``background``; its *majority* is the class predicted on most of its scored pixels (ties: the lower
    class index). Each wrong pixel of an object (true class c, majority m) is

    * ``whole_object`` — predicted m ≠ c: the object was read as another class, or missed (m = background);
    * ``edge`` — predicted background, m ≠ background: part of a found object lost to the background;
    * ``split`` — predicted another class, neither c, m nor background: the object split between classes;

    and a wrong background pixel (predicted as an object class) is ``spill``. With ``background=None``
    every class forms objects and ``edge``/``spill`` stay 0. Ignored pixels count nowhere. Also returns
    ``scored`` (pixels not ignored), ``wrong`` (the sum of the four kinds), ``objects`` and
    ``objects_misread`` (objects with m ≠ c).
    """
    labels = np.asarray(labels).astype(np.int64)
    predictions = np.asarray(predictions).astype(np.int64)
    if labels.shape != predictions.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} must both be B×H×W")
    counts = dict.fromkeys(COUNTS, 0)
    scored = labels != ignore_label
    counts["scored"] = int(scored.sum())
    if background is not None:
        counts["spill"] = int(np.sum((labels == background) & (predictions != background)))
    for image, predicted in zip(labels, predictions):
        for cls in np.unique(image[image != ignore_label]):
            if cls == background:
                continue
            regions, n = ndimage.label(image == cls, structure=_EIGHT_NEIGHBOURS)
            inside = regions > 0
            region, guess = regions[inside] - 1, predicted[inside]
            votes = np.bincount(region * num_classes + guess, minlength=n * num_classes).reshape(n, num_classes)
            majority = votes.argmax(axis=1)
            counts["objects"] += n
            counts["objects_misread"] += int(np.sum(majority != cls))
            wrong = guess != cls
            as_majority = guess == majority[region]
            counts["whole_object"] += int(np.sum(wrong & as_majority))
            lost = wrong & ~as_majority & (guess == background) if background is not None else np.zeros_like(wrong)
            counts["edge"] += int(lost.sum())
            counts["split"] += int(np.sum(wrong & ~as_majority & ~lost))
    counts["wrong"] = sum(counts[k] for k in KINDS)
    return counts


def error_fractions(counts: dict[str, int]) -> dict[str, float]:
    """Each kind's share of the scored pixels (they add up to 1 − pixel accuracy), and the share of
    objects misread."""
    fractions = {k: counts[k] / counts["scored"] if counts["scored"] else float("nan") for k in KINDS}
    fractions["objects_misread"] = counts["objects_misread"] / counts["objects"] if counts["objects"] else float("nan")
    return fractions


def format_errors(fractions: dict[str, float]) -> str:
    """A plain-text table of ``error_fractions``: each kind in % of the scored pixels."""
    described = {"whole_object": "whole objects misread or missed", "split": "objects split between classes",
                 "edge": "object pixels lost to background", "spill": "background taken for an object"}
    width = max(len(v) for v in described.values())
    lines = [f"{'wrong pixels, by kind':<{width}}  % of pixels", "-" * (width + 13)]
    lines += [f"{described[k]:<{width}}  {100 * fractions[k]:6.2f}" for k in KINDS]
    lines.append(f"({100 * fractions['objects_misread']:.1f} % of the objects misread)")
    return "\n".join(lines)
