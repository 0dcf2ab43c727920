"""The site side: a thin Flower ClientApp over one private round of local training."""

from fedsafe.common.flower_env import apply_offline_flower_env

apply_offline_flower_env()
