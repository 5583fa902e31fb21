"""`stjax.models.backbones.llama` as documented before the backbones package; the code lives in
`stjax.models.backbones.llama`."""

from stjax.models.backbones.llama import *  # noqa: F401,F403
from stjax.models.backbones.llama import Llama, LlamaConfig  # noqa: F401
