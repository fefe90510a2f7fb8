"""The network: neurons (equations, surrogates, backends), layers and the model builder.

Importing the package wires the neuron backends into :data:`snnrun.net.dynamics.BACKENDS`:
``autograd`` (the reference loop, :mod:`snnrun.net.dynamics`), ``torch`` (the handwritten
backward, :mod:`snnrun.net.neuron_loop`) and ``triton`` (:mod:`snnrun.kernels`, which falls back
to ``torch`` where the kernels cannot run).
"""

import importlib

from snnrun.net import neuron_loop  # noqa: F401  (registers "torch")

importlib.import_module("snnrun.kernels")  # registers "triton" (kernels/ lies outside src/)
