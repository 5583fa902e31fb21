"""`config.model` of STH-SepNet: every field with the paper's value and a comment (departures from
the released code: docs/sth_sepnet.md)."""

from __future__ import annotations

import ml_collections

from stjax.graph.adaptive import MTGNN_TOP_K


def default_config() -> ml_collections.ConfigDict:
  """The model section of a config, with the paper's values (GPT-2 backbone; configs/ use BERT)."""
  c = ml_collections.ConfigDict()
  c.name = "sth_sepnet"
  # --- temporal stream (LLM) ---
  c.use_llm = True  # False = "w/o LLM" ablation (spatial forecast only)
  c.pretrained = "gpt2"  # LM checkpoint (stjax folder, HF folder or hub id) merged into
  # params["llm"] by the trainer (stjax.models.backbones.config);
  # "" = random LM (tests and :cpu runs; warns)
  c.backbone = "gpt2"  # "gpt2" | "bert" | "llama": the LM family. bert and llama read
  # their geometry from `pretrained` (the four geometry fields
  # below then do not apply); a random bert (`pretrained` "")
  # takes it from them (FFN 4 x n_embd), a random llama is
  # Llama 3.2 1B. The configs in configs/ use bert (the
  # paper's Table 1; `:gpt2` variant for GPT-2)
  c.llm_layers = 6  # LM blocks kept; never more than the pretrained depth (the
  # loader refuses; released scripts ask 32 of 12, see docs)
  c.vocab_size = 50257  # LM geometry (GPT-2 small here); for GPT-2 it must match
  # `pretrained` (checked on load)
  c.n_positions = 1024  # LM position-table size
  c.n_embd = 768  # LM width d_llm
  c.n_head = 12  # LM heads
  c.attention_dropout = 0.1  # dropout on the LM's attention probabilities
  c.dtype = "float32"  # LM compute dtype: "float32" | "bfloat16"
  c.remat = "none"  # LLM blocks and spatial layers rematerialised in the backward: none | block (keep
  # matmul outputs) | full (keep only block/layer inputs) | a jax.checkpoint_policies name; a memory
  # lever (docs/scaling.md).
  c.lora_rank = 4  # LoRA rank on the LM's attention and MLP projections (0 = none)
  c.lora_alpha = 4.0  # LoRA scale alpha / rank (4 / 4 = 1)
  c.patch_len = 16  # patch length (TimeLLM / released code)
  c.stride = 8  # patch stride; the series is padded with `stride` copies of its end
  c.d_model = 768  # patch-embedding width (released GPT-2 scripts: 768)
  c.d_ff = 128  # LM features kept per patch token and reprogramming key width
  # (released: 128 METR/PEMS/BJ, 32 Bike)
  c.n_heads = 8  # reprogramming heads
  c.num_prototypes = 1000  # text prototypes (Linear over the vocab axis of the token table)
  c.reprogramming = True  # False = Dense(d_model -> d_llm) instead of cross-attention
  c.dropout = 0.1  # temporal-stream dropout (patch embedding, reprogramming, head)
  # and GPT-2 embedding/residual dropout
  # --- spatial stream (MTGNN style) ---
  c.use_spatial = True  # False = LLM forecast only
  c.graph = "adaptive"  # "adaptive" (MixProp on A and A^T) | "static" (MixProp on the
  # dataset adjacency, spec.adjacency)
  c.use_hypergraph = True  # x = gamma x1 + (1 - gamma) x2; False = x1 only (released Bike runs)
  c.hypergraph_conv = "hgat"  # "hgat" (released default) | "hgcn"
  c.num_layers = 3  # gated TCN + graph layers
  c.residual_channels = 32  # channels of the residual stream and graph convs
  c.conv_channels = 32  # dilated-inception channels (4 kernels x 8)
  c.skip_channels = 64  # skip-connection channels
  c.end_channels = 128  # hidden width of the output head
  c.node_dim = 40  # node-embedding size of the adaptive graph and hypergraph
  c.tanh_alpha = 3.0  # saturation alpha of the MTGNN constructors
  c.top_k = MTGNN_TOP_K  # neighbours kept per row of the adaptive graph
  c.mixprop_depth = 2  # MixProp hops
  c.mixprop_beta = 0.05  # MixProp retain ratio of the input
  c.hyperedge_size = 3  # k of the KNN hyperedges (node itself included)
  c.hypergraph_refresh = 100  # training steps between rebuilds of the KNN hyperedges
  c.graph_refresh = 0  # training steps between re-selections of the adaptive graph's
  # top-k edges (all N^2 scores); 0 = hypergraph_refresh, 1 = every
  # call (MTGNN). Edge weights train every step either way
  c.gamma_init = 0.5  # initial gamma (1 pairwise only, 0.5 mix, 0 hypergraph only)
  c.spatial_dropout = 0.3  # dropout on the skip input and after each gated TCN
  c.hypergraph_dropout = 0.2  # HGAT attention dropout
  c.graph_block = 1024  # rows per block when selecting top-k / KNN (memory O(N * block))
  # --- fusion ---
  c.fusion = "adaptive"  # "adaptive" | "attention" | "lstm"
  c.fusion_hidden = 16  # hidden width of the attention and LSTM gates
  # --- extra spatial-stream inputs (not in the paper; docs/sth_sepnet.md "Extra inputs") ---
  c.calendar_dim = 0  # 0 = paper: no calendar input (the released prompt's timestamps
  # are sample 0's); > 0 = learned time-of-day and day-of-week
  # embeddings of this width appended to the spatial stream's
  # input channels (MTGNN/Graph WaveNet convention)
  c.node_input_dim = 0  # 0 = paper; > 0 = a learned vector of this width per node
  # appended to the same input channels (STID's node identity)
  # --- compatibility with the released code (imported official checkpoints) ---
  c.spatial_variant = "stjax"  # "stjax" (the stream above) | "released": the released code's
  # spatial stream: one gamma for all layers, binary KNN hypergraph
  # rebuilt every call, HGAT over time steps with a softmax over all
  # nodes and per-call random weights (variables["hgat"] replays
  # recorded ones); with fusion = "released" (node-axis gate, clamp to
  # the `bounds` collection). docs/reproducing_sth_sepnet.md
  return c
