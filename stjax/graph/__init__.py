"""Graphs on index lists: edge lists, hypergraph incidence lists, segment-sum propagation,
MixProp, hypergraph convolutions, the sparse adaptive graph and the adaptive KNN hypergraph."""

from stjax.graph.adaptive import AdaptiveGraph, KNNHypergraph, blockwise_top_k, dedup_hyperedges, knn
from stjax.graph.edges import (
  EdgeList,
  MixProp,
  add_self_loops,
  edge_list_from_dense,
  edge_list_from_neighbors,
  in_degree,
  mixprop_operator,
  propagate,
  row_normalize,
)
from stjax.graph.hypergraph import (
  HypergraphAttention,
  HypergraphConv,
  Incidence,
  edge_degree,
  edges_to_nodes,
  hypergraph_smooth,
  incidence_from_members,
  node_degree,
  nodes_to_edges,
  segment_softmax,
)

__all__ = [
  "AdaptiveGraph",
  "EdgeList",
  "HypergraphAttention",
  "HypergraphConv",
  "Incidence",
  "KNNHypergraph",
  "MixProp",
  "add_self_loops",
  "blockwise_top_k",
  "dedup_hyperedges",
  "edge_degree",
  "edge_list_from_dense",
  "edge_list_from_neighbors",
  "edges_to_nodes",
  "hypergraph_smooth",
  "in_degree",
  "incidence_from_members",
  "knn",
  "mixprop_operator",
  "node_degree",
  "nodes_to_edges",
  "propagate",
  "row_normalize",
  "segment_softmax",
]
