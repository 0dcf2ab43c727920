"""Check every site reply before it is counted: only model-shaped arrays, known scalar metrics."""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from fedsafe.common import keys
from fedsafe.common.errors import FedsafeError

__all__ = [
    "MalformedReplyError",
    "RejectedUpdateError",
    "check_train_reply",
    "check_evaluate_reply",
    "reply_site_name",
    "scalar_metrics",
]

_TRAIN = {keys.ARRAYS, keys.METRICS, keys.SITE, keys.ATTESTATION}
_EVALUATE = {keys.METRICS, keys.SITE, keys.CONSENT}


class MalformedReplyError(FedsafeError):
    """A site's reply does not have the shape of an update; it is dropped, not aggregated."""


class RejectedUpdateError(FedsafeError):
    """An update whose attestation is missing, forged or does not match what was sent."""


def reply_site_name(content: RecordDict) -> str:
    """The site name a reply claims: exactly one string in the `site` record."""
    site = content.config_records.get(keys.SITE)
    if (
        site is None
        or set(site.keys()) != {keys.SITE_NAME}
        or not isinstance(site[keys.SITE_NAME], str)
    ):
        raise MalformedReplyError(
            f"record '{keys.SITE}' must hold exactly the string '{keys.SITE_NAME}'"
        )
    return str(site[keys.SITE_NAME])


def _scalar(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedReplyError(f"metric '{name}' is not a scalar number")
    return float(value)


def scalar_metrics(content: RecordDict) -> dict[str, float]:
    """The reply's metric record as floats; a value that is not a scalar number is malformed."""
    metrics = content.metric_records[keys.METRICS]
    return {name: _scalar(name, value) for name, value in metrics.items()}


def _check_records(
    content: RecordDict, metric_names: tuple[str, ...], allowed: set[str], *, required: set[str]
) -> None:
    extra = set(content.keys()) - allowed
    if extra:
        raise MalformedReplyError(f"unexpected records {sorted(extra)}; allowed {sorted(allowed)}")
    if keys.METRICS not in content.metric_records:
        raise MalformedReplyError(f"missing metric record '{keys.METRICS}'")
    metrics = content.metric_records[keys.METRICS]
    names = set(metrics.keys())
    # A site's release policy may withhold some metrics: only known names, and the required.
    if not required <= names <= set(metric_names):
        raise MalformedReplyError(
            f"metrics {sorted(names)} differ from the expected {sorted(metric_names)} "
            f"(required: {sorted(required)})"
        )
    for name, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise MalformedReplyError(f"metric '{name}' is not a scalar number")
        if math.isnan(value) and name != keys.AUROC:
            raise MalformedReplyError(f"metric '{name}' is NaN")
    if keys.NUM_EXAMPLES in metrics:
        count = _scalar(keys.NUM_EXAMPLES, metrics[keys.NUM_EXAMPLES])
        if not (math.isfinite(count) and count > 0):
            raise MalformedReplyError(f"'{keys.NUM_EXAMPLES}' must be finite and > 0")
    reply_site_name(content)


def check_train_reply(content: RecordDict, reference: ArrayRecord) -> None:
    """A training reply: the global model's exact keys, shapes and dtypes, finite values."""
    # Training loss leaves only under an `exact` release policy; the DP figures always do.
    required = set(keys.TRAIN_METRICS) - {keys.LOSS}
    _check_records(content, keys.TRAIN_METRICS, _TRAIN, required=required)
    if keys.ARRAYS not in content.array_records:
        raise MalformedReplyError(f"missing array record '{keys.ARRAYS}'")
    arrays = content.array_records[keys.ARRAYS]
    if list(arrays.keys()) != list(reference.keys()):
        raise MalformedReplyError("array names differ from the global model's")
    for name, ref in reference.items():
        got = arrays[name]
        if tuple(got.shape) != tuple(ref.shape) or got.dtype != ref.dtype:
            raise MalformedReplyError(
                f"array '{name}' is {got.dtype}{tuple(got.shape)}, "
                f"expected {ref.dtype}{tuple(ref.shape)}"
            )
        if not np.isfinite(got.numpy()).all():
            raise MalformedReplyError(f"array '{name}' holds NaN or infinite values")
    metrics = scalar_metrics(content)
    for name in (keys.DELTA, keys.STEPS, keys.SAMPLE_RATE, keys.NOISE_MULTIPLIER):
        if metrics[name] < 0:
            raise MalformedReplyError(f"metric '{name}' is negative")


def check_evaluate_reply(content: RecordDict) -> None:
    """An evaluation reply carries the site name and any subset of the known evaluate metrics.

    A site's release policy may withhold, round or noise its held-out figures, so a metric
    (the example count included) may be absent; what is present must be a number.
    """
    if content.array_records:
        raise MalformedReplyError("an evaluation reply must not carry arrays")
    _check_records(content, keys.EVAL_METRICS, _EVALUATE, required=set())
