"""snnrun: a Hydra-configured experiment runner for spiking neural networks.

``snnrun.load_run(path)`` opens a run dir for tools and notebooks (see :mod:`snnrun.api`);
``snnrun.Callback`` is the base class of your own callbacks (``callbacks:``, see
:mod:`snnrun.engine.callback`); ``snnrun.Neuron`` the base class of your own neurons
(``neuron._target_``, see :mod:`snnrun.neuron.contract`), whose step is written in ``snnrun.tl``
(:mod:`snnrun.neuron.dialect`).
"""

import math

from omegaconf import OmegaConf

from snnrun.core.version import __version__

__all__ = ["Callback", "Neuron", "__version__", "load_run", "tl"]

# ${mul:a,b,...} in configs, e.g. Linear(C*4*4) as "${mul:${model.channels},16}"; ${div:a,b}
# the integer quotient, e.g. Spikformer's first stem width E/8 as "${div:${model.embed_dim},8}".
OmegaConf.register_new_resolver("mul", lambda *xs: math.prod(xs), replace=True)
OmegaConf.register_new_resolver("div", lambda a, b: a // b, replace=True)
OmegaConf.register_new_resolver("sub", lambda a, b: a - b, replace=True)  # blocks - 1


def load_run(path, which="best", device="cpu"):
    """Open a run dir: config, metrics, and the network with its weights (see snnrun.api)."""
    from snnrun.api import load_run as _load_run

    return _load_run(path, which, device)


def __getattr__(name):
    """``snnrun.Callback``, ``snnrun.Neuron``, ``snnrun.tl``, imported when first asked for
    (``import snnrun`` stays light)."""
    if name == "Callback":
        from snnrun.engine.callback import Callback

        return Callback
    if name == "Neuron":
        import snnrun.net  # noqa: F401  (the network registers the triton backend)
        from snnrun.neuron.contract import Neuron

        return Neuron
    if name == "tl":
        from snnrun.neuron.dialect import tl

        return tl
    raise AttributeError(f"module 'snnrun' has no attribute {name!r}")
