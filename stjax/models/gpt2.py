"""`stjax.models.backbones.gpt2` as documented before the backbones package; the code lives in
`stjax.models.backbones.gpt2`."""

from stjax.models.backbones.gpt2 import *  # noqa: F401,F403
from stjax.models.backbones.gpt2 import GPT2, GPT2Config  # noqa: F401
