"""Fused Triton neuron kernels, shipped as ``snnrun.kernels`` (top-level ``kernels/`` in the repo).

Importing this package registers the ``triton`` neuron backend in
:data:`snnrun.neuron.state_loop.BACKENDS`: the one-membrane kernels for a layer whose step is those
equations (``closed_form``: if, lif, plif, leaky), kernels written from a trace of the step for
every other neuron (:mod:`.step_kernels`). The import is cheap and needs only torch: it defines the
``snnrun::neuron_forward`` / ``snnrun::neuron_backward`` custom ops (:mod:`.neuron_op`); Triton
itself and the kernels (:mod:`.neuron_kernels`, :mod:`.surrogate_jit`) are imported on the first
launch.

Where the kernels run, per call, by the device of the input:

- CUDA tensors: the Triton kernels.
- CPU tensors with ``TRITON_INTERPRET=1`` in the environment (read when this package is imported;
  Triton reads it when the kernels are defined): the same kernels through Triton's interpreter
  (slow; this is how the tests check them without a GPU).
- CPU tensors otherwise: the default ``torch`` backend
  (:mod:`snnrun.neuron.neuron_loop`), after one warning ``neuron.backend=triton needs a CUDA
  device; falling back to the torch backend on cpu``.
- Triton not installed: the ``torch`` backend, after one warning that names
  ``pip install triton``.

The fallback gives the reference results with the reference's dtypes (``v_last`` in the input
dtype rather than float32).
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from snnrun.kernels.neuron_op import triton_neuron
from snnrun.neuron.dynamics import Decay, Dynamics, MembraneResult
from snnrun.neuron.neuron_loop import handwritten_loop, torch_states
from snnrun.neuron.state_loop import BACKENDS

HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

_warned: set[str] = set()


def fallback_reason(device_type: str) -> str | None:
    """Why a tensor on ``device_type`` cannot go to the kernels (None when it can)."""
    if not HAVE_TRITON:
        return (
            f"neuron.backend=triton needs Triton (pip install triton); "
            f"falling back to the torch backend on {device_type}"
        )
    if device_type == "cuda" or INTERPRET:
        return None
    return (
        f"neuron.backend=triton needs a CUDA device; "
        f"falling back to the torch backend on {device_type}"
    )


def _falls_back(device_type: str) -> bool:
    """True when the torch loop must run instead; warns once per reason."""
    reason = fallback_reason(device_type)
    if reason is not None and reason not in _warned:
        _warned.add(reason)
        warnings.warn(reason, RuntimeWarning, stacklevel=3)
    return reason is not None


# torch.compile runs _falls_back in Python while tracing and keeps its result as a constant (what
# torch._dynamo.assume_constant_result does), so the warning causes no graph break. Set by hand:
# importing torch._dynamo here would cost ~1 s (and import Triton) on every `import snnrun`.
_falls_back._dynamo_marked_constant = True  # type: ignore[attr-defined]


def triton_membrane(
    x_seq: torch.Tensor, v: torch.Tensor, decay: Decay, dyn: Dynamics, store_v_seq: bool
) -> MembraneResult:
    """The one-membrane kernels on CUDA (or the interpreter); the handwritten torch loop
    otherwise (see above)."""
    if _falls_back(x_seq.device.type):
        return handwritten_loop(x_seq, v, decay, dyn, store_v_seq)
    return triton_neuron(x_seq, v, decay, dyn, store_v_seq)


@BACKENDS.register("triton")
def triton_states(owner, x_seq, state, params, step, store_v_seq):  # a state_loop.Backend
    """:func:`triton_membrane` where ``owner.closed_form()`` gives the equations, else kernels
    written from the trace of the step (:mod:`.step_kernels`, imported on the first launch);
    the torch backend where they cannot run."""
    if _falls_back(x_seq.device.type):
        return torch_states(owner, x_seq, state, params, step, store_v_seq)
    dyn = owner.closed_form()
    if dyn is not None:
        spikes, v, v_seq = triton_neuron(x_seq, state[0], params[0], dyn, store_v_seq)
        return spikes, (v,), v_seq
    from snnrun.kernels.step_kernels import traced_states

    return traced_states(owner, x_seq, state, params, step, store_v_seq)


__all__ = ["HAVE_TRITON", "INTERPRET", "triton_membrane", "triton_neuron", "triton_states"]
