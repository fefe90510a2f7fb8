"""Probing a network on test samples: spikes ``[T, N, ...]`` of every neuron layer, the output
layer's charge H before reset, predictions (what ``snnrun viz`` draws)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from snnrun.core.errors import SnnrunError

if TYPE_CHECKING:  # torch and matplotlib load inside the functions: a typo fails at once
    import torch

MAX_BATCH = 64


# --- one batch through the network --------------------------------------------------------------
@dataclass
class Probe:
    """One test batch through the network; the chosen sample is row 0 of the batch.

    ``inputs`` is the encoded batch ``[T, N, ...]``, ``output`` the network's ``[T, N, classes]``;
    ``spikes`` maps each neuron layer's index in ``model.layers`` to its ``[T, N, ...]`` spikes;
    ``charge`` is the last neuron layer's ``H`` (the membrane before each step's reset) and
    ``threshold`` its ``v_threshold``.
    """

    inputs: torch.Tensor
    target: int
    predicted: int
    output: torch.Tensor
    spikes: dict[int, torch.Tensor]
    charge: torch.Tensor
    threshold: float


def encode_batch(config: dict[str, Any], dataset: Any, indices: list[int]) -> tuple[Any, Any]:
    """The samples at ``indices`` as the network's input ``[T, N, ...]`` and labels ``[N]``.

    The data/encoder contract lives here only: ``dataset[i] -> (x, y)`` and
    ``build_encoder(config["encoder"])(x [N, ...], T) -> [T, N, ...]``.
    """
    import torch

    from snnrun.data.encoders import build_encoder

    items = [dataset[i] for i in indices]
    x = torch.stack([torch.as_tensor(s) for s, _ in items])
    y = torch.stack([torch.as_tensor(label) for _, label in items])
    return build_encoder(config["encoder"])(x, config["T"]), y


def probe(run: Any, dataset: Any, sample: int, device: torch.device) -> Probe:
    """Run ``sample`` and the next test samples (one batch) with every neuron layer recording."""
    import torch

    from snnrun.engine.losses import build_loss

    n = len(dataset)
    if not 0 <= sample < n:
        raise SnnrunError(f"viz sample={sample} but the test split has {n} samples (0-{n - 1})")
    size = min(run.config["batch_size"], MAX_BATCH, n)
    indices = [sample, *[i for i in range(n) if i != sample][: size - 1]]
    torch.manual_seed(run.config.get("seed", 0))  # a Poisson encoder draws the same each time
    x_seq, y = encode_batch(run.config, dataset, indices)
    out, spikes, charge, threshold = _recording(run.model, x_seq.to(device))
    predicted = build_loss(run.config["loss"]).predict(out[:, :1])
    return Probe(
        inputs=x_seq.float().cpu(),
        target=int(y[0]),
        predicted=int(predicted[0]),
        output=out,
        spikes=spikes,
        charge=charge,
        threshold=threshold,
    )


def _recording(model: torch.nn.Module, x_seq: torch.Tensor) -> tuple[Any, dict, Any, float]:
    """``model(x_seq)`` with every neuron layer's spikes kept, ``[T, N, ...]`` each by layer
    index, and the last neuron layer's charge ``H`` and threshold (on the CPU, float32)."""
    import torch

    from snnrun.net.neuron import SpikingNeuron, reset_states

    neurons = {i: m for i, m in enumerate(model.layers) if isinstance(m, SpikingNeuron)}
    last = neurons[max(neurons)]
    stored = last.store_v_seq
    recorded: dict[int, list[torch.Tensor]] = {i: [] for i in neurons}
    last_inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(_recorder(recorded[i], last_inputs if m is last else None))
             for i, m in neurons.items()]  # fmt: skip
    try:
        last.store_v_seq = True
        with torch.no_grad():
            out = model(x_seq).float().cpu()
            spikes = {i: torch.cat(recorded[i]).float().cpu() for i in neurons}
            charge = _charge(last, torch.cat(last_inputs), last.v_seq)
    finally:
        for h in hooks:
            h.remove()
        last.store_v_seq = stored
        reset_states(model)
    return out, spikes, charge.float().cpu(), last.dynamics.v_threshold


def _recorder(spikes: list[torch.Tensor], inputs: list[torch.Tensor] | None) -> Callable[..., None]:
    """A forward hook keeping a neuron layer's spikes, and its inputs when ``inputs`` is a list
    (one call per step in step mode 's', ``[1, N, ...]`` each)."""

    def hook(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
        spikes.append(out.detach())
        if inputs is not None:
            inputs.append(args[0].detach())

    return hook


def _charge(neuron: Any, x: torch.Tensor, v_after: torch.Tensor) -> torch.Tensor:
    """``H[t]``, the membrane before step t's reset, ``[T, N, ...]``: the layer's own charge
    equation (:func:`snnrun.net.dynamics.charge`) on its inputs ``x`` and ``V[t-1]``, the potential
    after the previous step's reset (``V[-1] = V_rest``). A spiking neuron's ``H`` is at or
    above the threshold, where ``V`` after a hard reset reads ``V_reset``."""
    import torch

    from snnrun.net.dynamics import charge

    v_after = v_after.reshape(x.shape)
    v_before = torch.cat([torch.full_like(v_after[:1], neuron.dynamics.v_rest), v_after[:-1]])
    return charge(neuron.dynamics, v_before, x, neuron.decay())
