"""Probes on frozen features: how linearly separable (or locally clustered) an encoder makes the classes.

The standard read-outs of self-supervised representations: the encoder is frozen, every case is
embedded once (pooled features, ``Encoder.forward``), and a simple classifier is fitted on the
labeled cases' features only.

* Linear probe (SimCLR, Chen et al. 2020, section 4): multinomial logistic regression
  ``p(y | z) = softmax(W z + b)`` with L2 penalty ``C``, on standardised features
  (scikit-learn ``StandardScaler`` + ``LogisticRegression``).
* kNN probe (Wu et al. 2018, "Unsupervised feature learning via non-parametric instance
  discrimination"; DINO uses it): the class distribution of the ``k`` nearest labeled cases in cosine
  distance, weighted by inverse distance (scikit-learn ``KNeighborsClassifier``).

Both are deterministic (lbfgs, exact neighbours). Feature extraction runs under ``torch.no_grad`` in
eval mode.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(-2, 1, (20, 4)), rng.normal(2, 1, (20, 4))])
    >>> y = np.repeat([0, 1], 20)
    >>> probs = linear_probe(x[::2], y[::2], x[1::2])
    >>> float((probs.argmax(1) == y[1::2]).mean())
    1.0
    >>> probs = knn_probe(x[::2], y[::2], x[1::2], k=3)
    >>> probs.shape
    (20, 2)
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from medssl.utils.devices import device_of

log = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    inputs: Iterable[torch.Tensor],
    *,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Pooled features ``(N, feature_dim)`` of inputs ``(C, *spatial)`` of one shape, batched."""
    device = device_of(encoder, device)
    was_training = encoder.training
    encoder.eval()
    features, batch = [], []

    def flush() -> None:
        if batch:
            out = encoder(torch.stack(batch).to(device))
            features.append(out.float().flatten(1).cpu().numpy())
            batch.clear()

    for item in inputs:
        batch.append(torch.as_tensor(item, dtype=torch.float32))
        if len(batch) == batch_size:
            flush()
    flush()
    encoder.train(was_training)
    if not features:
        raise ValueError("extract_features got no inputs")
    return np.concatenate(features)


def _check(train_features: np.ndarray, train_targets: Sequence[int], test_features: np.ndarray):
    x_train = np.asarray(train_features, dtype=np.float64)
    y_train = np.asarray(train_targets).astype(np.int64)
    x_test = np.asarray(test_features, dtype=np.float64)
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D, got {x_train.shape} and {x_test.shape}")
    if x_train.shape[0] != y_train.shape[0]:
        raise ValueError(f"{x_train.shape[0]} training features but {y_train.shape[0]} targets")
    if not (np.isfinite(x_train).all() and np.isfinite(x_test).all()):
        raise ValueError("features hold NaN or infinite values (a collapsed or diverged encoder?)")
    return x_train, y_train, x_test


def _full_probabilities(probabilities: np.ndarray, seen: np.ndarray, num_classes: int) -> np.ndarray:
    """Columns for the classes seen in training -> columns for all ``num_classes`` classes."""
    full = np.zeros((probabilities.shape[0], num_classes))
    full[:, seen] = probabilities
    return full


def linear_probe(
    train_features: np.ndarray,
    train_targets: Sequence[int],
    test_features: np.ndarray,
    *,
    num_classes: int | None = None,
    C: float = 1.0,
    max_iter: int = 2000,
) -> np.ndarray:
    """Class probabilities ``(N_test, num_classes)`` of a logistic regression on standardised features.

    With a single class among the training targets (a tiny budget), every test case gets that class
    with probability 1 and a warning is logged.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train, x_test = _check(train_features, train_targets, test_features)
    num_classes = num_classes or int(max(y_train.max(), 1)) + 1
    seen = np.unique(y_train)
    if seen.size == 1:
        log.warning("linear probe: the training targets hold one class (%d); predicting it for every case", seen[0])
        return _full_probabilities(np.ones((x_test.shape[0], 1)), seen, num_classes)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    model.fit(x_train, y_train)
    return _full_probabilities(model.predict_proba(x_test), model.classes_, num_classes)


def knn_k_used(k: int, n_train: int) -> int:
    """The number of neighbours a kNN probe with ``k`` votes with on ``n_train`` labeled cases."""
    return max(1, min(int(k), int(n_train)))


def knn_probe(
    train_features: np.ndarray,
    train_targets: Sequence[int],
    test_features: np.ndarray,
    *,
    num_classes: int | None = None,
    k: int = 5,
    metric: str = "cosine",
) -> np.ndarray:
    """Class probabilities ``(N_test, num_classes)`` of a distance-weighted kNN vote.

    ``k`` is clipped to the number of labeled cases (a budget of 2 cases votes with 2 neighbours),
    with a warning: every test case then gets the same neighbours, weighted by distance only
    (:func:`knn_k_used` gives the k that votes).
    """
    from sklearn.neighbors import KNeighborsClassifier

    x_train, y_train, x_test = _check(train_features, train_targets, test_features)
    num_classes = num_classes or int(max(y_train.max(), 1)) + 1
    if int(k) > x_train.shape[0]:
        log.warning("kNN probe: k=%d is more than the %d labeled case(s); voting with all %d (study.knn_k)",
                    int(k), x_train.shape[0], x_train.shape[0])
    k = knn_k_used(k, x_train.shape[0])
    model = KNeighborsClassifier(n_neighbors=k, weights="distance", metric=metric, algorithm="brute")
    model.fit(x_train, y_train)
    return _full_probabilities(model.predict_proba(x_test), model.classes_, num_classes)
