"""Wire vocabulary shared by the server and the sites: record names, config and metric keys."""

from __future__ import annotations

__all__ = [
    "ARRAYS",
    "CONFIG",
    "METRICS",
    "SITE",
    "SITE_NAME",
    "ATTESTATION",
    "IDENTITY",
    "CONSENT",
    "SEALED",
    "RUN_ID",
    "PURPOSE",
    "SERVER_ROUND",
    "NUM_EXAMPLES",
    "LOSS",
    "ACCURACY",
    "BALANCED_ACCURACY",
    "AUROC",
    "EPSILON",
    "DELTA",
    "STEPS",
    "NOISE_MULTIPLIER",
    "SAMPLE_RATE",
    "MAX_GRAD_NORM",
    "PROXIMAL_MU",
    "TRAIN_METRICS",
    "EVAL_METRICS",
    "PRIVACY_STATE",
    "PARTITION_ID",
    "RELEASE_MODE",
]

# Record names inside a Message's RecordDict.
ARRAYS = "arrays"  # ArrayRecord: the model, and nothing but model-shaped arrays
CONFIG = "config"  # ConfigRecord: server -> site instructions
METRICS = "metrics"  # MetricRecord: site -> server scalars
SITE = "site"  # ConfigRecord: who answered (site name), never data

ATTESTATION = "attestation"  # ConfigRecord: the site's signed statement about this round
IDENTITY = "identity"  # ConfigRecord: the site's signed answer to the run's roll call
SEALED = "sealed"  # ConfigRecord: {"blob": the update sealed to the ServerApp's key}
CONSENT = "consent"  # ConfigRecord: site-signed consent grants and withdrawals (JSON texts)

# Keys.
SITE_NAME = "site-name"
RUN_ID = "run-id"  # fedsafe's run id (the run folder's name), bound into what sites sign
PURPOSE = "purpose"  # the run's declared purpose; sites check it against their policy
SERVER_ROUND = "server-round"  # injected by Flower's strategies
PROXIMAL_MU = "proximal-mu"
NUM_EXAMPLES = "num-examples"  # Flower's default weighting key
LOSS = "loss"
ACCURACY = "accuracy"
BALANCED_ACCURACY = "balanced-accuracy"
AUROC = "auroc"
EPSILON = "epsilon"  # cumulative, for everything the site did on this data set
DELTA = "delta"
STEPS = "steps"  # DP-SGD steps taken this round
NOISE_MULTIPLIER = "noise-multiplier"
SAMPLE_RATE = "sample-rate"
MAX_GRAD_NORM = "max-grad-norm"
RELEASE_MODE = "release-mode"  # in a site's config record: the release policy its metrics followed

TRAIN_METRICS = (NUM_EXAMPLES, LOSS, EPSILON, DELTA, STEPS, NOISE_MULTIPLIER, SAMPLE_RATE)
EVAL_METRICS = (NUM_EXAMPLES, LOSS, ACCURACY, BALANCED_ACCURACY, AUROC)

# Site-local state (context.state), never sent.
PRIVACY_STATE = "fedsafe.privacy"

# Flower's simulation node config.
PARTITION_ID = "partition-id"
