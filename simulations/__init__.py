"""Entry points: the `fedsafe` command, Hydra-configured local simulations and benchmarks."""

from fedsafe.common.flower_env import apply_offline_flower_env

apply_offline_flower_env()
