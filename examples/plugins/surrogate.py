"""A surrogate gradient of your own, in the ``tl`` dialect of ``snnrun.neuron.dialect``.

The function is ``g'(x, <param>)``, ``x = H - V_th``; its second argument is the surrogate's one
parameter, set by the group key of that name (``surrogate.alpha=...``), its default otherwise.
Use only arithmetic, literal numbers and ``tl.exp``, ``tl.abs``, ``tl.sigmoid``, ``tl.where``,
``tl.maximum``, ``tl.zeros_like``: the torch backends run it on tensors and the Triton kernels
compile the very same function (``neuron.backend=triton``).
"""

from snnrun.neuron.dialect import tl


def exponential(x, alpha=2.0):
    """g'(x) = alpha/2 exp(-alpha |x|): SLAYER's spike escape rate ``rho = a exp(-b |u - V_th|)``
    (Shrestha & Orchard 2018, "SLAYER: Spike Layer Error Reassignment in Time", NeurIPS) with
    decay ``b = alpha`` and scale ``a = alpha/2``, so that g' integrates to 1."""
    return 0.5 * alpha * tl.exp(-alpha * tl.abs(x))
