"""The released STH-SepNet's LLM prompt (`models/ST_SepNet.py Model.forecast`), rebuilt on the host.

    prompts = official_prompts(x_enc, x_mark_enc, x_mark_dec, data="METR")   # list of B strings
    batch["prompt_ids"] = tokenize(prompts, "/models/gpt2")                  # [B, L] int32

One prompt per sample: a dataset description (with `prompt_domain = 0`, the released default, a
fixed CalTrans sentence whatever the data; its source line continuations leave runs of spaces in
it), the horizon, the input and prediction timestamps, and statistics of the node-mean series
(min, max, median, trend, top-5 autocorrelation lags). Copied as released, quirks included: the
timestamps of sample `b` are those of sample `b // N` (so sample 0's for every sample of a batch
smaller than N), and the tokenizer pads on the right with eos and no attention mask, so a sample's
patch tokens sit after its batch's longest prompt.
"""

from __future__ import annotations

import os

import numpy as np

from stjax.errors import UserError

_DESCRIPTION = (
  "{data} Traffic dataset: The data consists of {n} selected stop data distributed in the California "
  "Highway System (CalTrans). " + " " * 12 + "The data set time interval is a time interval of 5 minutes. "
  "The time range is in 2008-01-01 00:00:00 2008-03-31 23:55:00 weekdays of {n} stations traffic speed "
  "information," + " " * 12 + "data shows a strong periodicity. The input consists of adjacency matrix "
  "and timing feature matrix. The adjacency matrix is a new matrix " + " " * 12 + "with similar traffic "
  "flow patterns by analyzing the characteristics of existing spatio-temporal traffic data, and the "
  "characteristic matrix " + " " * 12 + "is the time series characteristic matrix of each sensor node. "
)
TOP_LAGS = 5


def description(data: str, num_nodes: int) -> str:
  """The released description for `prompt_domain = 0` (`--data` name, node count)."""
  return _DESCRIPTION.format(data=data, n=num_nodes)


def top_lags(series: np.ndarray, k: int = TOP_LAGS) -> np.ndarray:
  """`calcute_lags`: the k largest lags of the circular FFT autocorrelation, float32 as released.
  series [B, T] -> [B, k]. Lags j and T - j tie exactly in exact arithmetic; which comes first is
  decided by float32 rounding (NumPy >= 2 and torch agree on the released fixtures)."""
  spectrum = np.fft.rfft(series.astype(np.float32), axis=-1)
  corr = np.fft.irfft(spectrum * np.conj(spectrum), n=series.shape[-1], axis=-1)
  return np.argsort(-corr, axis=-1, kind="stable")[:, :k]


def _num(value: np.floating) -> str:
  return str(float(np.float32(value)))  # torch's tensor.tolist() of a float32


def statistics(x_enc: np.ndarray, backend: str = "numpy") -> dict[str, np.ndarray]:
  """min, max, median [B] float32, trend [B] (sign = upward), lags [B, 5] of the node-mean series
  of x_enc [B, T, N]. backend "numpy": the mean correctly rounded to float32; "torch": the released
  ops themselves (needs torch), whose float32 sum order decides the printed last digits."""
  if backend == "torch":
    try:
      import torch  # late: optional (test extras) and slow to import
    except ImportError:
      raise UserError("backend 'torch': torch is not installed (pip install torch)") from None
    pooled_t = torch.from_numpy(np.ascontiguousarray(x_enc, np.float32)).mean(2, keepdim=True)  # [B, T, 1]
    spectrum = torch.fft.rfft(pooled_t.permute(0, 2, 1).contiguous(), dim=-1)
    corr = torch.fft.irfft(spectrum * torch.conj(spectrum), dim=-1).mean(1)
    return {
      "min": torch.min(pooled_t, dim=1)[0][:, 0].numpy(),
      "max": torch.max(pooled_t, dim=1)[0][:, 0].numpy(),
      "median": torch.median(pooled_t, dim=1).values[:, 0].numpy(),
      "trend": pooled_t.diff(dim=1).sum(dim=1)[:, 0].numpy(),
      "lags": torch.topk(corr, TOP_LAGS, dim=-1)[1].numpy(),
    }
  if backend != "numpy":
    raise UserError(f"backend: must be 'numpy' or 'torch', got {backend!r}")
  # The node mean correctly rounded to float32; torch's float32 sum order can differ in the last
  # bits, which changes the printed statistics' last digits (and the prompt's tokens there).
  pooled = x_enc.mean(axis=2, dtype=np.float64).astype(np.float32)  # [B, T]
  return {
    "min": pooled.min(axis=1),
    "max": pooled.max(axis=1),
    "median": np.sort(pooled, axis=1)[:, (pooled.shape[1] - 1) // 2],  # torch: the lower middle value
    "trend": np.diff(pooled, axis=1).sum(axis=1),
    "lags": top_lags(pooled),
  }


def official_prompts(
  x_enc: np.ndarray,
  x_mark_enc: np.ndarray,
  x_mark_dec: np.ndarray,
  *,
  data: str,
  pred_len: int | None = None,
  content: str | None = None,
  backend: str = "numpy",
) -> list[str]:
  """The B prompt strings of a batch. x_enc [B, T, N] (scaled); x_mark_enc [B, T, M] and x_mark_dec
  [B, T_dec, M] the time marks the released data loader gives ([month, day, weekday, hour,
  minute]); `data` the `--data` name; `pred_len` default T; `content` the description of
  `--prompt_domain 1` (default: the fixed one); `backend` of the statistics (`statistics`)."""
  x_enc = np.asarray(x_enc, np.float32)
  if x_enc.ndim != 3:
    raise UserError(f"x_enc: expected [B, T, N], got shape {x_enc.shape}")
  b, t, n = x_enc.shape
  stats = statistics(x_enc, backend)
  text = description(data, n) if content is None else content
  marks_in, marks_out = np.asarray(x_mark_enc, np.float32), np.asarray(x_mark_dec, np.float32)
  prompts = []
  for i in range(b):
    j = i // n  # released: x_mark[b // N]
    prompts.append(
      f"<|start_prompt|>Dataset description: {text}"
      f"Task description: forecast the next {pred_len or t} steps given the previous {t} steps information; "
      "Input statistics: The time stamp information states as [month, day, hour, minutes],"
      f"The input time begins from {marks_in[j, 0].tolist()} to {marks_in[j, -1].tolist()} "
      f"The prediction time begins from {marks_out[j, 0].tolist()} to {marks_out[j, -1].tolist()}"
      f"min value {_num(stats['min'][i])}, max value {_num(stats['max'][i])}, "
      f"median value {_num(stats['median'][i])}, "
      f"the trend of input is {'upward' if stats['trend'][i] > 0 else 'downward'}, "
      f"top 5 lags are : {stats['lags'][i].tolist()}<|<end_prompt>|>"
    )
  return prompts


def tokenize(prompts: list[str], tokenizer_folder: str | os.PathLike, max_length: int = 2048) -> np.ndarray:
  """Token ids [B, L] int32 as released: the LLM's tokenizer, padded on the right with eos to the
  longest prompt, truncated at `max_length`."""
  import transformers  # late: slow to import, needed only to tokenize

  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True)
  except (OSError, ValueError) as e:
    raise UserError(f"{tokenizer_folder}: no tokenizer there ({type(e).__name__})") from None
  if tokenizer.eos_token:
    tokenizer.pad_token = tokenizer.eos_token
  ids = tokenizer(
    prompts, return_tensors="np", padding=True, truncation=True, max_length=max_length
  ).input_ids
  return np.asarray(ids, np.int32)
