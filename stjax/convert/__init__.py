"""Hugging Face <-> stjax checkpoints. `hf_gpt2`, `hf_llama`, `hf_bert`: `load`, `convert`, `export`.

Command line: `python -m stjax.convert gpt2|llama|bert --source=HUB_ID|DIR --output=DIR
[--num-layers=N]` and `python -m stjax.convert export --source=STJAX_DIR --output=HF_DIR`.
"""
