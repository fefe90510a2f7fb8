"""The small math dialect in which a neuron's equations and the surrogates are written, once.

A formula reads the global ``tl`` and uses only: arithmetic and comparisons, literal numbers,
``if`` on its compile-time arguments (annotated ``tl.constexpr``; plain Python values here), and
``tl.exp``, ``tl.abs``, ``tl.sigmoid``, ``tl.where``, ``tl.maximum``, ``tl.zeros_like``. Here
``tl`` is :class:`TorchMath`, so the formula runs on torch tensors (the reference loop and the
handwritten backend); ``snnrun.kernels.dialect.jit_copy`` compiles the very same function with
``tl`` bound to ``triton.language`` for the kernels.
"""

from __future__ import annotations

import torch


class TorchMath:
    """The ``tl`` dialect on torch tensors."""

    exp = staticmethod(torch.exp)
    abs = staticmethod(torch.abs)
    sigmoid = staticmethod(torch.sigmoid)
    where = staticmethod(torch.where)
    maximum = staticmethod(torch.maximum)
    zeros_like = staticmethod(torch.zeros_like)
    constexpr = None  # an annotation only (the formulas' modules defer annotations)


tl = TorchMath
