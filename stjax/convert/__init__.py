"""Hugging Face <-> stjax checkpoints. `hf_gpt2.load`, `hf_gpt2.convert`, `hf_gpt2.export`.

Command line: `python -m stjax.convert gpt2 --source=gpt2|DIR --output=DIR [--num-layers=N]` and
`python -m stjax.convert export --source=STJAX_DIR --output=HF_DIR`.
"""
