"""The neurons: each is its state and one step, in the ``tl`` dialect (:mod:`.dialect`).

- :mod:`.contract`: ``snnrun.Neuron``, the base of a neuron written as its states, parameters and
  ``step``; every backend runs that step (:mod:`.state_loop`);
- :mod:`.state_neurons`: ``alif``, ``synaptic`` (such steps) and ``psn`` (a matrix product);
- :mod:`.neurons`: the registry (``NEURONS``), ``if``, ``lif``, ``plif``, ``leaky`` (one membrane,
  the equations of :mod:`.dynamics`, with the handwritten ``torch`` backward of
  :mod:`.neuron_loop`), and how a layer is built from the config;
- :mod:`.surrogate`: the surrogate gradients.

Importing it registers the ``autograd`` and ``torch`` backends; ``triton`` is registered by
``snnrun.kernels`` (above this storey), which :mod:`snnrun.net` imports.
"""

from snnrun.neuron import contract, neuron_loop, state_neurons  # noqa: F401  (register them)
