"""ST-LLM equals a PyTorch re-implementation of the released model (HF GPT2Model inside)."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax.data.windows import DataSpec
from stjax.errors import UserError
from stjax.models import build_model
from stjax.models.st_llm import default_config
from stjax.train import optim


def tiny_config(**changes):
  c = default_config()
  c.update(
    n_embd=24,
    n_head=2,
    llm_layers=2,
    unfrozen_layers=1,
    trainable="pfa(1)",
    vocab_size=8,
    n_positions=16,
    embed_dim=8,
  )
  c.update(changes)
  return c


def make_spec(t_in, t_out, c_in, c_out, n=4):
  return DataSpec(
    num_nodes=n,
    input_len=t_in,
    output_len=t_out,
    in_channels=c_in,
    out_channels=c_out,
    input_offsets=tuple(range(1 - t_in, 1)),
    output_offsets=tuple(range(1, t_out + 1)),
    steps_per_day=48,
    adjacency=None,
    channel_names=tuple(f"c{i}" for i in range(c_out)),
  )


def make_batch(rng, spec, b=2):
  return {
    "x": jnp.asarray(rng.normal(size=(b, spec.input_len, spec.num_nodes, spec.in_channels)), jnp.float32),
    "tod": jnp.asarray(rng.integers(0, 48, (b, spec.input_len)) / 48 + 0.001, jnp.float32),
    "dow": jnp.asarray(rng.integers(0, 7, (b, spec.input_len)), jnp.int32),
  }


def build(config, spec):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    return build_model(config, spec)


def torch_st_llm(params, gpt_config, batch, t_in, c_in, t_out, steps_per_day):
  """The released ST-LLM forward (model_ST_LLM.py) in PyTorch, eval mode, with our weights."""
  import torch
  import transformers

  from stjax.convert import hf_gpt2

  t = lambda a: torch.tensor(np.asarray(a, np.float32))  # noqa: E731
  x = np.asarray(batch["x"])  # [B, T, N, C]
  b, _, n, _ = x.shape
  tod, dow = np.asarray(batch["tod"]), np.asarray(batch["dow"])
  # ST-LLM's input: [B, T, N, 3] with channels (value, tod, dow) -> permute to [B, C, N, T].
  full = np.concatenate(
    [
      x,
      np.broadcast_to(tod[:, :, None, None], (b, t_in, n, 1)),
      np.broadcast_to(dow[:, :, None, None], (b, t_in, n, 1)).astype(np.float32),
    ],
    -1,
  )
  inp = t(full).permute(0, 3, 2, 1)  # [B, C, N, T]
  cc = c_in + 2
  d_model = params["start_conv"]["kernel"].shape[1]
  # Our Dense row index is t * C + c; the conv input channel is c * T + t (reshape of [B, C, N, T]).
  kernel = (
    np.asarray(params["start_conv"]["kernel"])
    .reshape(t_in, cc, d_model)
    .transpose(1, 0, 2)
    .reshape(-1, d_model)
  )
  start_conv = torch.nn.Conv2d(cc * t_in, d_model, 1)
  start_conv.weight.data = t(kernel.T[:, :, None, None])
  start_conv.bias.data = t(params["start_conv"]["bias"])
  with torch.no_grad():
    data = inp.permute(0, 3, 2, 1)  # [B, T, N, C] as ST-LLM receives history_data
    # ST-LLM (STID style): [B, C, N, T] -> [B, N, C, T] -> view [B, N, C*T] -> [B, C*T, N, 1].
    input_data = (
      data.permute(0, 3, 2, 1).transpose(1, 2).contiguous().view(b, n, -1).transpose(1, 2).unsqueeze(-1)
    )
    e_p = start_conv(input_data)  # [B, D, N, 1]
    tod_idx = (data[:, -1, :, c_in] * steps_per_day).long()  # last step's tod per node
    dow_idx = data[:, -1, :, c_in + 1].long()
    e_t = (
      t(params["calendar"]["time_day"])[tod_idx] + t(params["calendar"]["time_week"])[dow_idx]
    )  # [B, N, D]
    e_t = e_t.transpose(1, 2).unsqueeze(-1)
    e_s = t(params["nodes"]["node_emb"]).unsqueeze(0).expand(b, -1, -1).transpose(1, 2).unsqueeze(-1)
    fused = torch.cat([e_p, e_t, e_s], dim=1)  # [B, 3D, N, 1]
    fusion = torch.nn.Conv2d(3 * d_model, gpt_config.n_embd, 1)
    fusion.weight.data = t(np.asarray(params["feature_fusion"]["kernel"]).T[:, :, None, None])
    fusion.bias.data = t(params["feature_fusion"]["bias"])
    tokens = fusion(fused).permute(0, 2, 1, 3).squeeze(-1)  # [B, N, d]
    hf = transformers.GPT2Config(**{k: v for k, v in gpt_config.to_hf().items() if k != "architectures"})
    gpt = transformers.GPT2Model(hf).eval()
    state = {k: torch.tensor(v) for k, v in hf_gpt2.to_hf_tensors(gpt_config, params["llm"]).items()}
    missing, unexpected = gpt.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("attn.bias") or k.endswith("masked_bias") for k in missing), (
      missing
    )
    hidden = gpt(inputs_embeds=tokens).last_hidden_state  # [B, N, d]
    reg = torch.nn.Conv2d(gpt_config.n_embd, t_out, 1)
    reg.weight.data = t(np.asarray(params["regression_layer"]["kernel"]).T[:, :, None, None])
    reg.bias.data = t(params["regression_layer"]["bias"])
    out = reg(hidden.permute(0, 2, 1).unsqueeze(-1))  # [B, T_out, N, 1]
  return out.numpy()


def test_matches_pytorch_reference(rng):
  spec = make_spec(12, 12, 1, 1)
  model = build(tiny_config(), spec)
  batch = make_batch(rng, spec)
  variables = jax.jit(lambda b: nn.meta.unbox(model.init({"params": jax.random.key(0)}, b)))(batch)
  # Bigger random weights than GPT-2's init so every part visibly contributes.
  params = jax.tree.map(lambda a: a * 5 if a.ndim == 2 else a, variables["params"])
  forward = jax.jit(lambda p, b: model.apply({"params": p}, b))
  pred, aux = forward(params, batch)
  want = torch_st_llm(params, model.llm, batch, 12, 1, 12, 48)
  np.testing.assert_allclose(pred, want, rtol=2e-4, atol=2e-4)
  assert float(aux["aux_loss"]) == 0.0
  # Causal over nodes: node 0's forecast ignores every other node's input.
  other = {**batch, "x": batch["x"].at[:, :, 1:].add(3.0)}
  pred2, _ = forward(params, other)
  np.testing.assert_allclose(pred2[:, :, 0], pred[:, :, 0], rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(pred2[:, :, 2:] - pred[:, :, 2:]).max()) > 1e-3
  total, trainable = optim.count_params(params, optim.trainable_mask(params, "pfa(1)"))
  print(f"ST-LLM tiny: {total:,} params, {trainable:,} trainable under pfa(1)")


@pytest.mark.parametrize("shape", [(12, 12, 1, 1), (19, 1, 2, 2), (48, 48, 1, 1)])
def test_output_shapes(rng, shape):
  spec = make_spec(*shape)
  model = build(tiny_config(), spec)
  batch = make_batch(rng, spec)
  variables = jax.eval_shape(lambda b: model.init({"params": jax.random.key(0)}, b), batch)
  (pred, aux), state = jax.eval_shape(
    lambda v, b: model.apply(v, b, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["memory"]),
    variables,
    batch,
  )
  assert pred.shape == (2, shape[1], 4, shape[3]) and state == {}


def test_too_many_nodes_is_a_user_error():
  with pytest.raises(UserError, match="n_positions"):
    build(tiny_config(), make_spec(12, 12, 1, 1, n=17))
