"""The neurons: each is its states, its parameters and one step, in the ``tl`` dialect
(:mod:`.dialect`).

- :mod:`.contract`: that contract (``SpikingNeuron``) and ``snnrun.Neuron``, the base of yours;
- :mod:`.state_loop`: ``BACKENDS``, the one registry that runs a neuron's step over time
  (``autograd``, the chunked-recompute node used by ``torch``);
- :mod:`.neurons`: ``if``, ``lif``, ``plif``, ``leaky`` (one membrane: the equations of
  :mod:`.dynamics`, whose handwritten ``torch`` backward is :mod:`.neuron_loop`), the registry
  ``NEURONS`` and how a layer is built from the config;
- :mod:`.state_neurons`: ``alif``, ``synaptic`` (steps of their own) and ``psn`` (a matrix
  product);
- :mod:`.surrogate`: the surrogate gradients.

Importing it registers the ``autograd`` and ``torch`` backends; ``triton`` is registered by
``snnrun.kernels`` (above this storey), which :mod:`snnrun.net` imports.
"""

from snnrun.neuron import contract, neuron_loop, state_neurons  # noqa: F401  (register them)
