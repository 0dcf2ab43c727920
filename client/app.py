"""The site's Flower ClientApp: unpack the message, run one private round, pack the reply."""

from __future__ import annotations

import json
import logging

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from common import keys
from common.config import ExperimentConfig, from_flat
from common.data import SiteData, load_site
from common.errors import FedsafeError
from common.privacy import Charge
from client.local_round import evaluate_round, train_round

__all__ = ["app", "build_client_app", "REFUSAL_CODE"]

log = logging.getLogger("fedsafe.client")

REFUSAL_CODE = 4100  # a site refused the round on purpose (budget, policy, bad input)


def _site(cfg: ExperimentConfig, context: Context) -> SiteData:
    torch.set_num_threads(1)  # one simulated site per core
    return load_site(cfg.dataset, int(context.node_config[keys.PARTITION_ID]))


def _history(context: Context) -> tuple[Charge, ...]:
    record = context.state.get(keys.PRIVACY_STATE)
    if record is None:
        return ()
    return tuple(Charge(*entry) for entry in json.loads(str(record["history"])))


def _remember(context: Context, history: tuple[Charge, ...]) -> None:
    payload = json.dumps([c.as_tuple() for c in history])
    context.state[keys.PRIVACY_STATE] = ConfigRecord({"history": payload})


def _refuse(msg: Message, site: str, err: Exception) -> Message:
    log.warning("site %s refused round: %s", site, err)
    return Message(Error(code=REFUSAL_CODE, reason=f"site {site}: {err}"), reply_to=msg)


def _reply(msg: Message, site: str, metrics: dict[str, float], state: dict | None = None) -> Message:
    content = RecordDict({keys.METRICS: MetricRecord(metrics), keys.SITE: ConfigRecord({keys.SITE_NAME: site})})
    if state is not None:
        content[keys.ARRAYS] = ArrayRecord(state)
    return Message(content=content, reply_to=msg)


def build_client_app(cfg: ExperimentConfig | None = None) -> ClientApp:
    """The ClientApp; `cfg` None means read it from Flower's run config (as `flwr run` does)."""
    app = ClientApp()

    def config_of(context: Context) -> ExperimentConfig:
        return cfg if cfg is not None else from_flat(dict(context.run_config), source="run config")

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        run_cfg = config_of(context)
        data = _site(run_cfg, context)
        instructions = msg.content[keys.CONFIG]
        try:
            outcome = train_round(
                run_cfg,
                data,
                msg.content[keys.ARRAYS].to_torch_state_dict(),
                server_round=int(instructions[keys.SERVER_ROUND]),
                history=_history(context),
                proximal_mu=float(instructions.get(keys.PROXIMAL_MU, 0.0)),
            )
        except FedsafeError as err:
            return _refuse(msg, data.site, err)
        _remember(context, outcome.history)
        return _reply(msg, data.site, outcome.metrics, outcome.state)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        run_cfg = config_of(context)
        data = _site(run_cfg, context)
        metrics = evaluate_round(run_cfg, data, msg.content[keys.ARRAYS].to_torch_state_dict())
        return _reply(msg, data.site, metrics)

    return app


app = build_client_app()
