"""ST-LLM (MDM 2024): spatial-temporal tokens through a partially frozen GPT-2.

| module | what lives there |
|---|---|
| `config.py` | `default_config()`: every `config.model` field |
| `model.py` | `STLLM`, `build(config.model, spec, kernels)` (registered) |
"""

from stjax.models.st_llm.config import default_config
from stjax.models.st_llm.model import STLLM, build

__all__ = ["STLLM", "build", "default_config"]
