"""Hydra configs shipped with adbench (config path ``pkg://adbench.conf``)."""
