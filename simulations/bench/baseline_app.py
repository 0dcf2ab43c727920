"""The reference: a bare Flower-example app (FedAvg + Opacus) on fedsafe's sites, model and data."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsafe.common.config import ExperimentConfig
from fedsafe.common.data import dataset_info, load_site, site_names
from fedsafe.common.models import model_for

__all__ = ["TimedFedAvg", "build_baseline_apps", "BASELINE_NOISE"]

BASELINE_NOISE = 1.0  # the cost of a DP step does not depend on the noise's size


class TimedFedAvg(FedAvg):
    """FedAvg that notes each round's start (configure_train) and end (aggregate_evaluate)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.round_start: dict[int, float] = {}
        self.round_end: dict[int, float] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.round_start[server_round] = time.time()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        result = super().aggregate_evaluate(server_round, replies)
        self.round_end[server_round] = time.time()
        return result


def _site_tensors(cfg: ExperimentConfig, context: Context, train: bool) -> TensorDataset:
    data = load_site(cfg.dataset, int(context.node_config["partition-id"]))
    x, y = (data.x_train, data.y_train) if train else (data.x_test, data.y_test)
    return TensorDataset(torch.from_numpy(x).float(), torch.from_numpy(y).long())


def _model(cfg: ExperimentConfig, msg: Message) -> nn.Module:
    model = model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset))
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    return model


def build_baseline_apps(
    cfg: ExperimentConfig, strategy: TimedFedAvg | None = None
) -> tuple[ServerApp, ClientApp, TimedFedAvg]:
    """ServerApp (plain FedAvg) and ClientApp (Opacus make_private, train, evaluate)."""
    n_sites = len(site_names(cfg.dataset))
    n_min = min(cfg.strategy.min_sites, n_sites)
    strategy = strategy or TimedFedAvg(
        fraction_train=cfg.strategy.fraction_train,
        fraction_evaluate=1.0,
        min_train_nodes=n_min,
        min_evaluate_nodes=n_min,
        min_available_nodes=n_min,
    )
    server, client = ServerApp(), ClientApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        model = model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset), seed=cfg.seed)
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=cfg.training.rounds,
        )

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        from opacus import PrivacyEngine

        torch.set_num_threads(1)
        model = _model(cfg, msg)
        data = _site_tensors(cfg, context, train=True)
        loader = DataLoader(data, batch_size=cfg.training.batch_size, shuffle=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.training.learning_rate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module, optimizer, loader = PrivacyEngine().make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=BASELINE_NOISE,
                max_grad_norm=cfg.privacy.max_grad_norm,
            )
            criterion, total = nn.CrossEntropyLoss(), 0.0
            for _ in range(cfg.training.local_epochs):
                for xb, yb in loader:
                    optimizer.zero_grad()
                    if len(yb):
                        loss = criterion(module(xb), yb)
                        loss.backward()
                        total += float(loss)
                    optimizer.step()
        reply = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"train_loss": total, "num-examples": len(data)}),
            }
        )
        return Message(content=reply, reply_to=msg)

    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        model = _model(cfg, msg).eval()
        x, y = _site_tensors(cfg, context, train=False).tensors
        with torch.no_grad():
            out = model(x)
        metrics = MetricRecord(
            {
                "eval_loss": float(nn.functional.cross_entropy(out, y)),
                "eval_acc": float((out.argmax(1) == y).float().mean()),
                "num-examples": len(y),
            }
        )
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    return server, client, strategy
