"""The coordinator's Flower ServerApp: read the config, run the federation, write the run folder."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsafe.common.config import ExperimentConfig, from_flat
from fedsafe.server.federation import run_federation
from fedsafe.server.run_dir import new_run_dir

__all__ = ["app", "build_server_app", "new_run_dir"]


def build_server_app(cfg: ExperimentConfig | None = None, run_dir: Path | None = None) -> ServerApp:
    """The ServerApp; `cfg` None means read it from Flower's run config (as `flwr run` does)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_cfg = (
            cfg if cfg is not None else from_flat(dict(context.run_config), source="run config")
        )
        run_federation(grid, run_cfg, run_dir or new_run_dir(run_cfg))

    return app


app = build_server_app()
