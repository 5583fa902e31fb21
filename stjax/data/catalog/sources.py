"""Where the catalogue's files come from: pinned public URL prefixes (GitHub commits, Zenodo) and the
"where to get it" notes of files without a direct link."""

from __future__ import annotations

GH = "https://raw.githubusercontent.com"
DCRNN = f"{GH}/liyaguang/DCRNN/602afd9d767d3aa1c9b3eac51710d6aeee12c227/data/sensor_graph"
TGCN = f"{GH}/lehaifeng/T-GCN/219a2346f5bf68d54d91a948e7a41a08f9edc46b/data"
ASTGNN = f"{GH}/guoshnBJTU/ASTGNN/9c2e19b98c4cedf1f35214d8789685b6381b3aad/data"
SEPNET = f"{GH}/jiawenchen10/ST-SepNet/e1b4a02ca10a4cc4a56c4ad4c105445f33db6e9a/dataset"
PMDMNET = f"{GH}/wengwenchao123/PM-DMNet/8e517f579781cb2223088d8df38e4fbbde8439dd/data"
STSSL = f"{GH}/Echo-Ji/ST-SSL/b3f3dfc48d12524c207cc89f4e242cb8aac081c0/data"
MVFN = f"{GH}/zhangdongran/MVFN/b6332b9a9d1043599eac3d78fe34b38a17211235/data"
ZENODO_DCRNN = "https://zenodo.org/records/4263971/files"

STLLM_NOTE = (
  "ST-LLM's preprocessed split (Google Drive link in https://github.com/ChenxiLiu-HNU/ST-LLM README)"
)
SEPNET_NOTE = "STH-SepNet's series (Google Drive link in https://github.com/jiawenchen10/ST-SepNet README)"
SUBSET_NOTE = "derived from public DCRNN-style splits; see docs/data_formats.md (real full-length series)"
PEMS_NOTE = "ASTGCN/STSGCN flow arrays (links in https://github.com/guoshnBJTU/ASTGNN README)"
