"""`stjax.models.bert`, the public path of the BERT encoder (as `stjax.models.gpt2` and
`stjax.models.llama`); the code lives in `stjax.models.backbones.bert`."""

from stjax.models.backbones.bert import *  # noqa: F401,F403
from stjax.models.backbones.bert import Bert, BertConfig  # noqa: F401
