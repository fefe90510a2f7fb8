"""snnrun: a Hydra-configured experiment runner for spiking neural networks."""

import math

from omegaconf import OmegaConf

__version__ = "0.1.0"

# ${mul:a,b,...} in configs, e.g. Linear(C*4*4) as "${mul:${model.channels},16}".
OmegaConf.register_new_resolver("mul", lambda *xs: math.prod(xs), replace=True)
