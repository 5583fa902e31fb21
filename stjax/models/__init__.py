"""Models: GPT-2 backbone, ST-LINK, ST-LLM, STH-SepNet. Build them with `build_model`."""

from stjax.models.registry import build_model, model_names, register

__all__ = ["build_model", "model_names", "register"]
