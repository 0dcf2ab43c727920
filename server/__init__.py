"""The coordinator side: a thin Flower ServerApp, strategies with recording, the run folder."""

from fedsafe.common.flower_env import apply_offline_flower_env

apply_offline_flower_env()
