"""The server counts only well-formed updates; anything else is dropped with its reason."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedsafe.common import keys
from fedsafe.server.validation import MalformedReplyError, check_evaluate_reply, check_train_reply


def _reference() -> ArrayRecord:
    return ArrayRecord(
        {"w": Array(np.zeros((3, 2), dtype=np.float32)), "b": Array(np.zeros(2, dtype=np.float32))}
    )


def _metrics(**override: float) -> MetricRecord:
    values = {k: 1.0 for k in keys.TRAIN_METRICS} | override
    return MetricRecord(values)


def _reply(
    arrays: ArrayRecord | None = None, metrics: MetricRecord | None = None, **extra: object
) -> RecordDict:
    content = RecordDict(
        {
            keys.ARRAYS: arrays if arrays is not None else _reference(),
            keys.METRICS: metrics if metrics is not None else _metrics(),
            keys.SITE: ConfigRecord({keys.SITE_NAME: "cleveland"}),
        }
    )
    for name, record in extra.items():
        content[name] = record  # type: ignore[assignment]
    return content


def test_a_well_formed_update_passes() -> None:
    check_train_reply(_reply(), _reference())


def test_an_extra_record_is_refused() -> None:
    rows = ConfigRecord({"rows": [1.0, 2.0]})
    with pytest.raises(MalformedReplyError, match=r"unexpected records \['leak'\]"):
        check_train_reply(_reply(leak=rows), _reference())


def test_a_wrongly_shaped_array_is_refused() -> None:
    arrays = ArrayRecord(
        {"w": Array(np.zeros((4, 2), dtype=np.float32)), "b": Array(np.zeros(2, dtype=np.float32))}
    )
    with pytest.raises(
        MalformedReplyError, match=r"array 'w' is float32\(4, 2\), expected float32\(3, 2\)"
    ):
        check_train_reply(_reply(arrays=arrays), _reference())


def test_renamed_arrays_are_refused() -> None:
    arrays = ArrayRecord(
        {"x": Array(np.zeros((3, 2), dtype=np.float32)), "b": Array(np.zeros(2, dtype=np.float32))}
    )
    with pytest.raises(MalformedReplyError, match="array names differ"):
        check_train_reply(_reply(arrays=arrays), _reference())


def test_non_finite_values_are_refused() -> None:
    w = np.zeros((3, 2), dtype=np.float32)
    w[0, 0] = np.nan
    arrays = ArrayRecord({"w": Array(w), "b": Array(np.zeros(2, dtype=np.float32))})
    with pytest.raises(MalformedReplyError, match="array 'w' holds NaN"):
        check_train_reply(_reply(arrays=arrays), _reference())


def test_unknown_or_missing_metrics_are_refused() -> None:
    with pytest.raises(MalformedReplyError, match="metrics .* differ from the expected"):
        check_train_reply(_reply(metrics=_metrics(extra=1.0)), _reference())


def test_zero_examples_or_negative_steps_are_refused() -> None:
    with pytest.raises(MalformedReplyError, match="'num-examples' must be finite and > 0"):
        check_train_reply(_reply(metrics=_metrics(**{keys.NUM_EXAMPLES: 0.0})), _reference())
    with pytest.raises(MalformedReplyError, match="metric 'steps' is negative"):
        check_train_reply(_reply(metrics=_metrics(**{keys.STEPS: -1.0})), _reference())


def test_an_evaluation_reply_may_not_carry_arrays() -> None:
    content = RecordDict(
        {
            keys.ARRAYS: _reference(),
            keys.METRICS: MetricRecord({k: 1.0 for k in keys.EVAL_METRICS}),
            keys.SITE: ConfigRecord({keys.SITE_NAME: "x"}),
        }
    )
    with pytest.raises(MalformedReplyError, match="must not carry arrays"):
        check_evaluate_reply(content)
