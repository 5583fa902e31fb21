"""Recipes of the experiment configs in configs/ and benchmarks/configs/: one table of datasets
(`datasets.py`) and one module per method (`st_link.py`, `st_llm.py`, `sth_sepnet.py`), each with
its paper setting and its `:cpu` variant; `common.py` holds the groups several methods share (the
tiny random GPT-2, the short CPU run, the benchmark GPT-2).

Config files are loaded by path (`--config=configs/X.py[:variant]`) and cannot import each other,
so what they share lives here, and a config file is a docstring (its commands) and one call:

    from stjax.recipes import st_link

    def get_config(arg=None):
      return st_link.config("metr-la", arg)

Every field a recipe sets is commented where it is set; `config.X` defaults are commented in
`stjax.train.config.base_config` and the model's `default_config()`.
"""
