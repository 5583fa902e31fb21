"""STH-SepNet (KDD 2025): LLM temporal stream + adaptive-hypergraph spatial stream + gated fusion.

| module | what lives there |
|---|---|
| `config.py` | `default_config()`: every `config.model` field (paper values) |
| `model.py` | `STHSepNet`, its module config, `build(config.model, spec, kernels)` (registered) |
| `temporal.py`, `spatial.py`, `fusion.py` | the temporal stream (LLM), the spatial stream (MTGNN + hypergraph), the gates |
| `released.py` | the released code's hypergraph and HGAT (`spatial_variant = "released"`, imported checkpoints) |

Design and departures from the released code: docs/sth_sepnet.md; importing official checkpoints:
docs/reproducing_sth_sepnet.md.
"""

from stjax.models.sth_sepnet.config import default_config
from stjax.models.sth_sepnet.model import STHSepNet, STHSepNetConfig, build

__all__ = ["STHSepNet", "STHSepNetConfig", "build", "default_config"]
