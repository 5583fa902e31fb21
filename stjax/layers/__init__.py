"""Reusable Flax layers, shared by every model: attention (`attend`, over the kernels of
`stjax.kernels.attention`), rotary positions (`rope`), dropout, calendar and node embeddings,
RevIN, LoRA."""
