"""The network: layers, blocks, attention, your own modules, the model builder and its summary.

Its neurons come from :mod:`snnrun.neuron` (their equations, surrogates and the ``autograd`` and
``torch`` backends); importing this package imports :mod:`snnrun.kernels`, which registers the
``triton`` backend (falling back to ``torch`` where the kernels cannot run). :func:`make_neuron`
is public: a user's ``{type: module}`` class builds its neurons from the run's groups with it.
"""

import snnrun.kernels  # noqa: F401  (registers the triton backend)
from snnrun.net.custom import make_neuron

__all__ = ["make_neuron"]
