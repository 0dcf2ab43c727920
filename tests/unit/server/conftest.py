"""In-process sites behind a loopback Grid: real keys, real signed statements, real Flower messages.

Only the transport is stood in for (each instruction is handed to the site's handler and its
replies come back, as the SuperLink would deliver them); the coordinator's strategy,
compliance, consent registry and ledger are the real ones. A test plays a hostile site by
changing what one site sends: weights, counts, names, ids, JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedsafe.common import crypto, keys
from fedsafe.common.attestation import (
    arrays_digest,
    attestation_payload,
    identity_payload,
    sign_statement,
)
from fedsafe.common.config import ExperimentConfig, PrivacyConfig, StrategyConfig, from_dict
from fedsafe.common.consent import ConsentRecord, sign_consent
from fedsafe.common.ledger import Ledger
from fedsafe.common.privacy.accountants import epsilon_for
from fedsafe.server.compliance import Compliance, CoordinatorKeys
from fedsafe.server.consent import ConsentRegistry
from fedsafe.server.recorder import RunRecorder
from fedsafe.server.strategy import RecordingStrategy, build_strategy

RUN = "run-hostile"
PURPOSE = "research"
DATASET = "heart_disease"
NOISE, RATE, STEPS, DELTA = 1.0, 0.1, 10, 1e-5
SHAPE = (8,)


def global_model(value: float = 0.0) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.full(SHAPE, value, dtype=np.float32))})


def one_round_epsilon() -> float:
    return epsilon_for([(NOISE, RATE, STEPS)], delta=DELTA)


@dataclass
class Site:
    """One site: its key, its data size, the step it adds to the model, and its replies.

    `attest` overrides fields of the signed attestation, `metrics` of the reported train
    metrics; `train_reply`/`evaluate_reply`/`roll_call_reply` replace the honest reply
    builders entirely (each returns a list: a site may answer twice, or not at all).
    """

    name: str
    num_examples: int = 100
    step: float = 0.1
    record_id: str = "consent-1"
    attest: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    eval_metrics: dict[str, float] | None = None
    consent_json: str | None = None  # sent with the evaluate reply when set
    train_reply: Callable[[Site, Message], list[Message]] | None = None
    roll_call_reply: Callable[[Site, Message], list[Message]] | None = None
    private: bytes = b""
    public: bytes = b""
    trained: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.private, self.public = crypto.generate_signing_key()

    # --- honest behaviour ------------------------------------------------------------------

    def grant(self, record_id: str | None = None, site: str | None = None) -> dict[str, Any]:
        now = datetime.now(UTC)
        record = ConsentRecord(
            site=site or self.name,
            dataset=DATASET,
            purposes=(PURPOSE,),
            legal_basis="test",
            data_categories=("records",),
            jurisdiction="EU",
            valid_from=now,
            valid_until=None,
            granted_at=now,
            record_id=record_id or self.record_id,
        )
        return sign_consent(record, self.private, site_public_pem=self.public).to_dict()

    def identity(self, msg: Message, name: str | None = None) -> RecordDict:
        run_id = str(msg.content[keys.CONFIG][keys.RUN_ID])
        statement = identity_payload(site=name or self.name, run_id=run_id, purpose=PURPOSE)
        return RecordDict(
            {
                keys.SITE: ConfigRecord({keys.SITE_NAME: name or self.name}),
                keys.IDENTITY: ConfigRecord(sign_statement(statement, self.private)),
                keys.CONSENT: ConfigRecord(
                    {"json": json.dumps({"grants": [self.grant()], "withdrawals": []})}
                ),
            }
        )

    def update(self, msg: Message, step: float | None = None) -> RecordDict:
        server_round = int(msg.content[keys.CONFIG][keys.SERVER_ROUND])
        base = msg.content[keys.ARRAYS]["w"].numpy()
        arrays = {"w": (base + np.float32(self.step if step is None else step)).astype(np.float32)}
        payload = attestation_payload(
            site=self.name,
            run_id=RUN,
            server_round=server_round,
            epsilon=one_round_epsilon(),
            delta=DELTA,
            steps=STEPS,
            update_digest=arrays_digest(arrays),
            noise_multiplier=NOISE,
            sample_rate=RATE,
            num_examples=self.num_examples,
        )
        payload.update(self.attest)
        metrics = {
            keys.NUM_EXAMPLES: float(self.num_examples),
            keys.LOSS: 0.5,
            keys.EPSILON: one_round_epsilon(),
            keys.DELTA: DELTA,
            keys.STEPS: float(STEPS),
            keys.NOISE_MULTIPLIER: NOISE,
            keys.SAMPLE_RATE: RATE,
        } | self.metrics
        return RecordDict(
            {
                keys.ARRAYS: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                keys.METRICS: MetricRecord(metrics),
                keys.SITE: ConfigRecord({keys.SITE_NAME: self.name}),
                keys.ATTESTATION: ConfigRecord(sign_statement(payload, self.private)),
            }
        )

    def evaluation(self) -> RecordDict:
        metrics = self.eval_metrics
        if metrics is None:
            metrics = {
                keys.NUM_EXAMPLES: 50.0,
                keys.LOSS: 0.4,
                keys.ACCURACY: 0.8,
                keys.BALANCED_ACCURACY: 0.75,
                keys.AUROC: 0.85,
            }
        content = RecordDict(
            {
                keys.METRICS: MetricRecord(metrics),  # type: ignore[arg-type]
                keys.SITE: ConfigRecord({keys.SITE_NAME: self.name}),
            }
        )
        if self.consent_json is not None:
            content[keys.CONSENT] = ConfigRecord({"json": self.consent_json})
        return content

    # --- the handler the grid calls --------------------------------------------------------

    def handle(self, msg: Message) -> list[Message]:
        kind = msg.metadata.message_type
        if kind == MessageType.QUERY:
            if self.roll_call_reply is not None:
                return self.roll_call_reply(self, msg)
            return [Message(self.identity(msg), reply_to=msg)]
        if kind == MessageType.TRAIN:
            self.trained.append(int(msg.content[keys.CONFIG][keys.SERVER_ROUND]))
            if self.train_reply is not None:
                return self.train_reply(self, msg)
            return [Message(self.update(msg), reply_to=msg)]
        return [Message(self.evaluation(), reply_to=msg)]


class LoopbackGrid(Grid):
    """Hands each instruction to the addressed in-process site and returns its replies."""

    def __init__(self, sites: dict[int, Site]) -> None:
        self.sites = sites

    @property
    def run(self) -> Any:  # pragma: no cover - not used by the strategy
        raise NotImplementedError

    def set_run(self, run_id: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # pragma: no cover
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # pragma: no cover
        raise NotImplementedError

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies: list[Message] = []
        for msg in messages:
            replies.extend(self.sites[msg.metadata.dst_node_id].handle(msg))
        return replies


@dataclass
class Federation:
    """A coordinator (real strategy, compliance, ledger) and its in-process sites."""

    tmp: Path
    sites: dict[int, Site]
    strategy_cfg: StrategyConfig
    privacy: PrivacyConfig
    compliance: Compliance = field(init=False)
    strategy: RecordingStrategy = field(init=False)
    grid: LoopbackGrid = field(init=False)

    def __post_init__(self) -> None:
        enrolled = self.tmp / "sites"
        enrolled.mkdir(parents=True, exist_ok=True)
        for site in self.sites.values():
            (enrolled / f"{site.name}.pub").write_bytes(site.public)
        self.compliance = Compliance(
            run_id=RUN,
            purpose=PURPOSE,
            dataset=DATASET,
            jurisdictions=None,
            ledger=Ledger.open(self.tmp / "ledger.sqlite"),
            witness=self.tmp / "witness.json",
            coordinator=CoordinatorKeys.load_or_create(self.tmp / "server", enrolled),
            consent=ConsentRegistry.open(self.tmp / "consent.sqlite"),
            privacy=self.privacy,
        )
        cfg = from_dict(ExperimentConfig, {"name": "hostile", "runs_dir": str(self.tmp)})
        self.strategy = RecordingStrategy(
            build_strategy(self.strategy_cfg),
            RunRecorder(self.tmp / "run", cfg),
            self.compliance,
            min_sites=self.strategy_cfg.min_sites,
            roll_call_timeout_s=5.0,
            sealed=False,
            limits=self.strategy_cfg,
        )
        self.grid = LoopbackGrid(self.sites)

    def run(self, rounds: int = 1, initial: ArrayRecord | None = None) -> ArrayRecord:
        """Run `rounds` real strategy rounds; the global model after them."""
        start = initial if initial is not None else global_model()
        result = self.strategy.start(
            grid=self.grid,
            initial_arrays=start,
            num_rounds=rounds,
            timeout=5.0,
            train_config=ConfigRecord({keys.RUN_ID: RUN, keys.PURPOSE: PURPOSE}),
            evaluate_config=ConfigRecord({keys.RUN_ID: RUN, keys.PURPOSE: PURPOSE}),
        )
        return result.arrays if len(result.arrays) else start

    def ledger(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            e.payload for e in self.compliance.ledger.entries() if kind is None or e.kind == kind
        ]

    def errors(self) -> str:
        return "\n".join(p.get("message", "") for p in self.ledger("error"))


@pytest.fixture
def federation(tmp_path: Path) -> Callable[..., Federation]:
    """Build a federation of the given sites (node ids 101, 102, ...) with a strategy config."""
    built: list[Federation] = []
    # What Flower's ServerApp runtime sets before `main` runs: who sends the instructions.
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1

    def make(*sites: Site, privacy: PrivacyConfig | None = None, **strategy: Any) -> Federation:
        cfg = from_dict(StrategyConfig, {"min_sites": 2, **strategy})
        fed = Federation(
            tmp_path / f"fed{len(built)}",
            {101 + i: s for i, s in enumerate(sites)},  # node 1 is the SuperLink
            cfg,
            privacy or PrivacyConfig(enabled=True, target_epsilon=3.0, delta=DELTA),
        )
        built.append(fed)
        return fed

    yield make  # type: ignore[misc]
    for fed in built:
        fed.compliance.ledger.close()
        fed.compliance.consent.close()
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
