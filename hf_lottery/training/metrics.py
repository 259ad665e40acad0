"""GLUE metrics as GLUE reports them, computed locally (no metric code is downloaded at run time)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef


def compute_metrics(metric: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All metrics of a task; ``metric`` names the main one, which the dict always holds.

    ``predictions`` are logits (classification) or scores (regression).
    """
    if metric == "pearson":
        scores = predictions.reshape(-1)
        if np.ptp(scores) == 0:  # constant predictions: no correlation, and comparable to other levels as 0
            return {"pearson": 0.0, "spearmanr": 0.0}
        return {"pearson": float(pearsonr(scores, labels)[0]), "spearmanr": float(spearmanr(scores, labels)[0])}
    predicted = predictions.argmax(axis=-1)
    result = {"accuracy": float((predicted == labels).mean())}
    if metric == "f1":
        result["f1"] = float(f1_score(labels, predicted))
    elif metric == "matthews_correlation":
        result["matthews_correlation"] = float(matthews_corrcoef(labels, predicted))
    return result
