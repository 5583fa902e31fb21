"""Pretrained language-model backbones behind one interface: GPT-2, Llama and BERT.

Every backbone is a Flax module with the same call and the same pluggable parts, so ST-LINK,
ST-LLM and STH-SepNet are written once against this interface:

    config, params = stjax.convert.backbones.load_backbone("gpt2" | FOLDER, num_layers=6)
    model = build_backbone(backbone_name(config), config.replace(causal=False, dtype="bfloat16"))
    hidden = model.apply({"params": params}, inputs_embeds,        # [batch, seq, embed]
                         deterministic=True, attention_kwargs=None, return_aux=False)
    table = token_embedding_table(params)                          # [vocab, embed]

- `hidden` is the last hidden state after the final norm ([batch, seq, hidden_size(config)]),
  exactly HF's `GPT2Model` / `LlamaModel(inputs_embeds=...).last_hidden_state`.
- `build_backbone(..., attention_factory=i -> (() -> module), extra_ffn_factory=i -> ...)`
  swaps a block's attention (a subclass keeping the projection names and overriding
  `transform_qk`) or adds an extra FFN (`(out, aux_loss)`, summed into `return_aux`).
- Positions: GPT-2 adds its learned table (`use_wpe`, GPT-2 only); Llama rotates q/k at
  `attention_kwargs["positions"]` ([seq] or [batch, seq]; default 0..seq-1).
- Config fields differ by family (GPT-2: n_embd, n_layer; Llama and BERT: hidden_size,
  num_hidden_layers); use `hidden_size(config)` and `num_layers(config)`. Every config has
  `causal`, `dtype`, `lora_rank`, `lora_alpha`, `lora_targets` and `replace(**changes)`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn

from stjax.errors import UserError
from stjax.models.backbones.bert import Bert, BertConfig
from stjax.models.backbones.gpt2 import GPT2, GPT2Config
from stjax.models.backbones.llama import Llama, LlamaConfig

# name -> (module class, config class, path of the token table in its params); converters:
# stjax.convert.backbones.
_BACKBONES: dict[str, tuple[type[nn.Module], type, tuple[str, ...]]] = {
  "gpt2": (GPT2, GPT2Config, ("wte",)),
  "llama": (Llama, LlamaConfig, ("embed_tokens",)),
  "bert": (Bert, BertConfig, ("embeddings", "word_embeddings")),
}


def backbone_names() -> list[str]:
  return sorted(_BACKBONES)


def backbone_name(config: Any) -> str:
  """'gpt2' or 'llama' for a backbone config instance."""
  for name, (_, config_cls, _) in _BACKBONES.items():
    if isinstance(config, config_cls):
      return name
  raise TypeError(f"not a backbone config: {type(config).__name__}")


def hidden_size(config: Any) -> int:
  """Model width d of a backbone config."""
  return config.n_embd if isinstance(config, GPT2Config) else config.hidden_size


def num_layers(config: Any) -> int:
  """Number of blocks of a backbone config."""
  return config.n_layer if isinstance(config, GPT2Config) else config.num_hidden_layers


def build_backbone(
  name: str,
  config: Any = None,
  attention_factory: Callable[[int], Callable[[], nn.Module] | None] | None = None,
  extra_ffn_factory: Callable[[int], Callable[[], nn.Module] | None] | None = None,
  module_name: str | None = None,
) -> nn.Module:
  """The backbone module `name` ('gpt2' | 'llama').

  Args:
    name: backbone family.
    config: that family's config instance, or a mapping of its fields (None = its defaults:
      124M GPT-2, Llama 3.2 1B).
    attention_factory, extra_ffn_factory: per-block pluggable parts (see the module docstring).
    module_name: the Flax name of the module (e.g. "llm" when built in a parent's `setup` under
      another attribute name); None = Flax's default.
  """
  if name not in _BACKBONES:
    raise UserError(f"backbone: unknown backbone {name!r}; known: {', '.join(backbone_names())}")
  module_cls, config_cls, _ = _BACKBONES[name]
  if config is None:
    config = config_cls()
  elif isinstance(config, Mapping) or hasattr(config, "to_dict"):
    fields = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    try:
      config = config_cls(**fields)
    except TypeError as e:
      raise UserError(f"backbone {name}: bad config fields ({e})") from None
  elif not isinstance(config, config_cls):
    raise UserError(f"backbone {name}: expected a {config_cls.__name__}, got {type(config).__name__}")
  return module_cls(
    config, attention_factory=attention_factory, extra_ffn_factory=extra_ffn_factory, name=module_name
  )


def token_embedding_table(params: Any) -> Any:
  """The input token-embedding table [vocab, embed] of any backbone's params.

  `params` is the backbone's own tree (e.g. `variables["params"]["llm"]`); STH-SepNet builds its
  text prototypes from it.
  """
  for _, _, path in _BACKBONES.values():
    node = params
    for key in path:
      node = node.get(key) if hasattr(node, "get") else None
    if node is not None:
      return nn.unbox(node["embedding"])
  raise UserError(
    f"params: no token embedding table (looked for "
    f"{', '.join('/'.join(p) for _, _, p in _BACKBONES.values())}; keys: {sorted(params)[:8]})"
  )


def token_table_module(backbone: nn.Module) -> nn.Embed:
  """The token-embedding submodule [vocab, embed] of a bound backbone module (any family)."""
  for module_cls, _, path in _BACKBONES.values():
    if isinstance(backbone, module_cls):
      node = backbone
      for key in path:
        node = getattr(node, key)
      return node
  raise TypeError(f"not a backbone module: {type(backbone).__name__}")
