"""The network: neurons (equations, surrogates, backends), layers, blocks and the model builder.

Importing the package wires the neuron backends into :data:`snnrun.net.dynamics.BACKENDS`:
``autograd`` (the reference loop, :mod:`snnrun.net.dynamics`), ``torch`` (the handwritten
backward, :mod:`snnrun.net.neuron_loop`) and ``triton`` (:mod:`snnrun.kernels`, which falls back
to ``torch`` where the kernels cannot run). :func:`make_neuron` is public: a user's
``{type: module}`` class builds its neurons from the run's groups with it.
"""

import importlib

from snnrun.net import neuron_loop, state_neurons  # noqa: F401  (register "torch"; alif, synaptic, psn)
from snnrun.net.custom import make_neuron

importlib.import_module("snnrun.kernels")  # registers "triton" (kernels/ lies outside src/)

__all__ = ["make_neuron"]
