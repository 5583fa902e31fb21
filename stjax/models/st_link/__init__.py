"""ST-LINK (CIKM 2025): a pretrained LLM with SE-Attention, MRFFN memory and RevIN.

| module | what lives there |
|---|---|
| `config.py` | `default_config()`: every `config.model` field |
| `model.py` | `STLink`, `build(config.model, spec, kernels)` (registered) |
| `se_attention.py`, `memory.py` | SE-Attention (spatial/temporal rotary q/k), MRFFN (memory + experts) |

Design choices and their reasons: docs/st_link.md.
"""

from stjax.models.st_link.config import default_config
from stjax.models.st_link.model import STLink, build, check_patches, resolve_mrffn_layers

__all__ = ["STLink", "build", "check_patches", "default_config", "resolve_mrffn_layers"]
