"""Probing a network on test samples: spikes ``[T, N, ...]`` of every neuron layer at any depth,
the last neuron layer's charge H before reset, predictions (what ``snnrun viz`` draws)."""

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
    ``spikes`` maps each neuron layer's label (``model.neurons()``: ``L3``, ``L4.body.2``,
    ``L7.neuron``), in the network's order, to its ``[T, N, ...]`` spikes; ``charge`` is the
    last neuron layer's ``H`` (the membrane before each step's reset), shaped as its spikes, and
    ``threshold`` its ``v_threshold``.
    """

    inputs: torch.Tensor
    target: int
    predicted: int
    output: torch.Tensor
    spikes: dict[str, torch.Tensor]
    charge: torch.Tensor
    threshold: float

    @property
    def first(self) -> str:
        """The first neuron layer's label."""
        return next(iter(self.spikes))

    @property
    def last(self) -> str:
        """The last neuron layer's label (the one whose charge is kept)."""
        return list(self.spikes)[-1]


def encode_batch(config: dict[str, Any], dataset: Any, indices: list[int]) -> tuple[Any, Any]:
    """The samples at ``indices`` as the network's input ``[T, N, ...]`` and labels ``[N]``.

    The data/encoder contract lives here only: ``dataset[i] -> (x, y)`` and
    ``build_encoder(config["encoder"])(x [N, ...], T) -> [T, N, ...]``.
    """
    import torch

    from snnrun.data.encoder import build_encoder

    items = [dataset[i] for i in indices]
    x = torch.stack([torch.as_tensor(s) for s, _ in items])
    y = torch.stack([torch.as_tensor(label) for _, label in items])
    return build_encoder(config["encoder"])(x, config["T"]), y


def probe(run: Any, dataset: Any, sample: int, device: torch.device) -> Probe:
    """Run ``sample`` and the next test samples (one batch) with every neuron layer recording."""
    import torch

    from snnrun.engine.loss import build_loss

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


def _recording(model: Any, x_seq: torch.Tensor) -> tuple[Any, dict, Any, float]:
    """``model(x_seq)`` with every neuron layer's spikes kept, ``[T, N, ...]`` each by label, and
    the last neuron layer's charge ``H`` and threshold (on the CPU, float32)."""
    import torch

    from snnrun.neuron.neurons import reset_states

    neurons = dict(model.neurons())
    if not neurons:
        raise SnnrunError("the network has no neuron layer: viz draws spikes; add a {type: neuron}")
    last_label, last = list(neurons.items())[-1]
    recorded: dict[str, list[torch.Tensor]] = {label: [] for label in neurons}
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [m.register_forward_hook(_recorder(recorded[label])) for label, m in neurons.items()]
    hooks.append(last.register_forward_hook(_charge_recorder(calls)))
    stored = last.store_v_seq
    try:
        last.store_v_seq = True
        with torch.no_grad():
            out = model(x_seq).float().cpu()
            spikes = {label: torch.cat(parts).float().cpu() for label, parts in recorded.items()}
            x, v_after = (torch.cat(parts) for parts in zip(*calls))
            charge = _charge(last, x, v_after).reshape(spikes[last_label].shape)
    finally:
        for h in hooks:
            h.remove()
        last.store_v_seq = stored
        reset_states(model)
    return out, spikes, charge.float().cpu(), last.dynamics.v_threshold


def _recorder(spikes: list[torch.Tensor]) -> Callable[..., None]:
    """A forward hook keeping a neuron layer's spikes, one part per call (``[T, N, ...]``; one
    step ``[1, N, ...]`` per call in step mode 's' or inside a ``recurrent`` entry)."""

    def hook(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
        spikes.append(out.detach())

    return hook


def _charge_recorder(calls: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable[..., None]:
    """A forward hook keeping, per call, a neuron's input ``X`` and its potential after the
    reset ``V`` over the call's steps, ``[t, ...]`` each. The layer's ``v_seq`` holds the last
    call's steps in step mode 'm' (a neuron fed ``[1, N, ...]`` per step inside a
    ``recurrent`` entry) and every call's so far in step mode 's': the tail is this call's."""

    def hook(module: Any, args: Any, out: torch.Tensor) -> None:
        x = args[0] if module.step_mode == "m" else args[0].unsqueeze(0)
        v_after = module.v_seq[-x.shape[0] :].reshape(x.shape)
        calls.append((x.detach(), v_after.detach()))

    return hook


def _charge(neuron: Any, x: torch.Tensor, v_after: torch.Tensor) -> torch.Tensor:
    """``H[t]``, the membrane before step t's reset, ``[T, ...]``: the layer's own charge
    (``charge_seq``) on its inputs ``x`` and the potentials after each step's reset (the state
    carries over between calls within one forward). A spiking neuron's ``H`` is at or above the
    threshold, where ``V`` after a hard reset reads ``V_reset``."""
    return neuron.charge_seq(x, v_after)
