"""A composed Hydra config into the frozen, validated `ExperimentConfig`: the only place a
DictConfig is read. A rejected value names where it came from: the override, or the YAML file."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.errors import ConfigError

__all__ = ["SOURCE", "config_from_hydra", "plain", "source_of"]

SOURCE = "conf/ (Hydra composition + overrides)"


def plain(node: Any) -> Any:
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def source_of(key: str, hydra_node: Any) -> str:
    """Where the value at `key` came from: the command-line override that set it, else the last
    file of the composition that sets it, else the composition and its group choices."""
    if hydra_node is None:
        return SOURCE
    choices = hydra_node.runtime.choices
    task = [str(override) for override in hydra_node.overrides.task]
    matches = []
    for override in task:
        target = override.split("=", 1)[0].lstrip("+~")
        if target in choices:
            continue  # a group choice (federation=banks) picks files, it sets no value
        if _under(key, target) or _under(target, key):
            matches.append((len(target), override))
    if matches:
        return f"command-line override '{max(matches)[1]}'"
    overrides = [*(str(override) for override in hydra_node.overrides.hydra), *task]
    try:
        found = _file_of(key, hydra_node, overrides)
    except Exception:  # noqa: BLE001 - naming the file is a courtesy; the ConfigError must surface
        found = None
    groups = ", ".join(f"{g}={c}" for g, c in choices.items() if not str(g).startswith("hydra"))
    return found or (f"conf/config.yaml with {groups}" if groups else SOURCE)


def _under(key: str, outer: str) -> bool:
    return key == outer or key.startswith((f"{outer}.", f"{outer}["))


def _file_of(key: str, hydra_node: Any, overrides: list[str]) -> str | None:
    """The last config file in Hydra's defaults list that sets `key`. A later file wins, and a
    group file may set other groups' keys (federation/banks.yaml sets training.class_weighting,
    privacy/eps3.yaml takes the rest of privacy from privacy/dp.yaml), so each file is read."""
    if not GlobalHydra.instance().is_initialized():
        return None
    loader = GlobalHydra.instance().config_loader()
    try:
        defaults = loader.compute_defaults_list(
            hydra_node.job.config_name, overrides, RunMode.RUN
        ).defaults
    except HydraException:  # the composition just succeeded with these overrides
        return None
    path = key.split("[", 1)[0].split(".")
    found = None
    for default in defaults:
        package = default.package.split(".") if default.package else []
        if default.config_path is None or package[:1] == ["hydra"]:
            continue
        located = _read_config_file(default.config_path, hydra_node.runtime.config_sources)
        if located is not None and _sets(located[1], package, path):
            found = located[0]
    return found


def _read_config_file(config_path: str, sources: Any) -> tuple[str, Any] | None:
    """The file Hydra read for `config_path` (the first search-path source that has it), named
    as the user knows it (`conf/privacy/eps3.yaml` for fedsafe's own groups), and its content."""
    name = f"{config_path}.yaml"
    for source in sources:
        if source.schema == "file":
            file: Any = Path(source.path) / name
            shown = str(file)
        elif source.schema == "pkg":
            module, _, folder = str(source.path).partition("/")
            file = importlib.resources.files(module).joinpath(folder, name)
            shown = (
                f"conf/{name}" if source.path == "fedsafe.conf" else f"pkg://{source.path}/{name}"
            )
        else:
            continue
        if file.is_file():
            content = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            if isinstance(content, dict):
                content.pop("defaults", None)
            return shown, content
    return None


def _sets(content: Any, package: list[str], path: list[str]) -> bool:
    """Whether a file, merged at `package`, sets the value at `path` (or a part of it)."""
    shared = min(len(package), len(path))
    if package[:shared] != path[:shared]:
        return False
    node = content
    for part in path[len(package) :]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return bool(node) if len(path) < len(package) else True


def config_from_hydra(cfg: DictConfig) -> ExperimentConfig:
    """The only place a DictConfig is seen: turned into frozen, validated dataclasses. An invalid
    value names where it came from (the override, or the YAML file), so it can be fixed there."""
    if "hydra" in cfg:  # compose(..., return_hydra_config=True), as the tests compose
        hydra_node = cfg.hydra
    else:  # the running job's: Hydra takes its node out of the task's config
        hydra_node = HydraConfig.get() if HydraConfig.initialized() else None
    data = {k: plain(cfg[k]) for k in cfg if k != "hydra"}  # hydra.run.dir: no resolving
    try:
        return from_dict(ExperimentConfig, data)
    except ConfigError as err:
        source = source_of(err.key, hydra_node)
        raise ConfigError(err.key, err.value, err.allowed, source=source) from None
