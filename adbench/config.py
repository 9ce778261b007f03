"""The Hydra config of a command line, composed without running it (tests, benchmarks, notebooks)."""

from __future__ import annotations

from omegaconf import DictConfig


def compose(overrides: list[str]) -> DictConfig:
    """The Hydra config of ``python -m adbench <overrides>``, without running it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="adbench.conf", version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)
