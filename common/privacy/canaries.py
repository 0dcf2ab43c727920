"""Canaries for a one-run privacy audit: random records, each trained on with probability 1/2.

A canary is an input drawn at random (Gaussian, at the scale of the site's own encoded rows)
with a label drawn at random: nothing else in the data predicts its label, so a model that
gives a canary's label a high score has learned it from that canary alone. The coin flips come
from the operating system and are kept by the auditor only; the training path never sees them
apart from the canaries it was given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["Canaries", "draw_canaries", "canary_scores"]


@dataclass(frozen=True)
class Canaries:
    """m canary inputs and labels, and which of them the site trains on (`included`)."""

    x: np.ndarray
    y: np.ndarray
    included: np.ndarray

    @property
    def m(self) -> int:
        return len(self.y)

    def training_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The canaries that go into the site's training rows (about half of them)."""
        return self.x[self.included], self.y[self.included]


def draw_canaries(m: int, *, like: np.ndarray, n_classes: int, scale: float = 1.0) -> Canaries:
    """m canaries shaped like one row of `like`, each coordinate N(0, (scale * sd)^2), where sd
    is the rows' overall standard deviation; labels uniform over the classes; coins fair.

    Everything is drawn from 128 bits of OS entropy, never from a config seed.
    """
    if m < 2:
        raise ValueError(f"an audit needs at least 2 canaries, got {m}")
    if n_classes < 2:
        raise ValueError(f"canaries need at least 2 classes, got {n_classes}")
    rows = np.asarray(like)
    if rows.ndim < 2 or len(rows) == 0:
        raise ValueError(f"`like` must be a non-empty array of rows, got shape {rows.shape}")
    rng = np.random.default_rng(int.from_bytes(os.urandom(16), "big"))
    sd = float(np.std(rows)) or 1.0
    x = rng.normal(0.0, scale * sd, size=(m, *rows.shape[1:])).astype(rows.dtype, copy=False)
    y = rng.integers(0, n_classes, size=m).astype(np.int64)
    included = rng.random(m) < 0.5
    return Canaries(x=x, y=y, included=included)


def canary_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """How strongly a model holds each canary's label: its logit minus the best other logit.

    Higher means "looks trained on"; a model that never saw a canary has no reason to favour
    its random label.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"logits {logits.shape} must be (m, classes) for {len(labels)} labels")
    own = logits[np.arange(len(labels)), labels]
    others = logits.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return own - others.max(axis=1)
