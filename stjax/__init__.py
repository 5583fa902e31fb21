"""stjax: spatio-temporal forecasting with language-model backbones in JAX/Flax.

Subpackages: `stjax.data` (readers, protocols, pipeline), `stjax.graph` (index-list graph maths),
`stjax.models` (GPT-2, ST-LINK, ST-LLM, STH-SepNet), `stjax.convert` (Hugging Face weights).
Entry points: `python -m stjax.train`, `stjax.evaluate`, `stjax.data`, `stjax.convert`, `stjax.bench`.
"""

__version__ = "0.1.0"
