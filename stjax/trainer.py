"""Kept for configs written before the `stjax.train` package: `trainer.base_config(...)`,
`trainer.parse_variant(...)` and `trainer.train_and_evaluate(...)` still work. New code imports
`stjax.train`."""

from stjax.train import base_config, build_experiment, parse_variant, train_and_evaluate

__all__ = ["base_config", "build_experiment", "parse_variant", "train_and_evaluate"]
