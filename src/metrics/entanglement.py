"""Entanglement of an edit, measured by morphometry (not by the regressor that was optimised): the
change achieved against the change asked, the class-flip rate, the drift of the other attributes,
and the realism of the edited samples (FID, precision against real test digits)."""

from __future__ import annotations

import numpy as np
import torch

from src.metrics.morphometry import CONTROLLABLE, measure
from src.sampling.control import predicted_classes


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return round(float(finite.mean()), 4) if len(finite) else None


def measure_edit(
    before: torch.Tensor,
    after: torch.Tensor,
    attribute: str,
    delta: float,
    start_class: torch.Tensor,
    classifier,
    real_spread: dict[str, float],
    scores=None,
    measured: tuple[dict, dict] | None = None,
) -> dict:
    """What an edit did, measured by morphometry on the images before and after.

    ``achieved_share``: mean achieved change / asked change; ``class_flip_rate``: share of samples
    the classifier does not read as their start class after the edit (``misread_before_rate``:
    before it; zero unless the start class is a conditional G's label); ``drift``: per other
    attribute, the mean |change| in units of its spread on real digits (0 = untouched);
    ``scores``: a GenerativeScores for FID / precision against real digits, before and after;
    ``measured``: the morphometry of ``before`` and ``after`` when the caller has it already.
    """
    measured_before, measured_after = measured or (measure(before), measure(after))
    change = {name: measured_after[name] - measured_before[name] for name in CONTROLLABLE}
    achieved = change[attribute]
    flips = predicted_classes(classifier, after) != start_class.cpu()
    # a cGAN's label is its start class: some samples are misread before any edit
    misread = predicted_classes(classifier, before) != start_class.cpu()
    result = {
        "attribute": attribute,
        "asked": delta,
        "achieved_mean": _mean(achieved),
        "achieved_median": round(float(np.nanmedian(achieved)), 4)
        if np.isfinite(achieved).any()
        else None,
        "achieved_share": None,
        "share_reaching_80pc": round(float(np.nanmean(achieved / delta >= 0.8)), 4),
        "class_flip_rate": round(float(flips.float().mean()), 4),
        "misread_before_rate": round(float(misread.float().mean()), 4),
        "blank_after": int((~np.isfinite(measured_after["thickness"])).sum()),
        "start_mean": _mean(measured_before[attribute]),
        "drift": {
            name: _mean(np.abs(change[name]) / real_spread[name])
            for name in CONTROLLABLE
            if name != attribute
        },
        "signed_change": {name: _mean(change[name]) for name in CONTROLLABLE},
    }
    if result["achieved_mean"] is not None and delta:
        result["achieved_share"] = round(result["achieved_mean"] / delta, 4)
    drifts = [v for v in result["drift"].values() if v is not None]
    result["mean_drift"] = round(float(np.mean(drifts)), 4) if drifts else None
    if scores is not None:
        for name, images in (("before", before), ("after", after)):
            scored = scores.score(images)
            result[f"fid_{name}"] = round(scored["fid"], 3)
            result[f"precision_{name}"] = round(scored["precision"], 4)
    return result


def per_column_change(measured: list[dict], attribute: str) -> list[float | None]:
    """Mean change of ``attribute`` in each column of a path, from each column's morphometry."""
    first = measured[0][attribute]
    return [_mean(column[attribute] - first) for column in measured]
