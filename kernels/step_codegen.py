"""Triton source for a neuron's fused forward and backward, written from a trace of its step.

:class:`snnrun.neuron.dialect.Trace` records a step's operations (``e0 = x * p0``, ``e1 = fire(e0
- 1.0)`` ...). :func:`kernel_source` writes, for ``S`` states and ``P`` parameters:

- ``fwd``: one program owns ``BLOCK`` neurons for all T steps with the states in registers (in
  ``ACC``: float64 for a float64 input, else float32); every ``CHUNK`` steps it writes the states
  entering the chunk to ``ckpt [ceil(T/CHUNK), S, N]``; it writes the spikes (and the membrane,
  the last state, when ``STORE_V``) per step.
- ``bwd``: chunks from last to first: each re-runs its steps from its checkpoint, keeping the
  states entering every step in ``[CHUNK, BLOCK]`` register tiles, then walks the chunk backwards:
  the step's forward once more, then its reverse-mode derivative, written here op by op from the
  trace (``fire``: the surrogate's ``g'``; ``detach`` and comparisons: none; ``maximum`` and
  ``abs`` as torch differentiates them, ties split). Out: ``grad_x [T, N]``, the initial states'
  gradients ``[N]`` and per neuron the parameters' ``[N]`` (summed by the caller).

A parameter is ``scalar`` (one value, loaded once) or ``element`` (one per neuron ``[N]``).
Pure Python: the text is compiled by :mod:`snnrun.kernels.step_kernels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from snnrun.neuron.dialect import Var

FORWARD = {
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "div": "({0} / {1})",
    "neg": "(-{0})", "exp": "tl.exp({0})", "abs": "tl.abs({0})", "sigmoid": "tl.sigmoid({0})",
    "where": "tl.where({0}, {1}, {2})", "maximum": "tl.maximum({0}, {1})",
    "minimum": "tl.minimum({0}, {1})", "zeros_like": "tl.zeros_like({0})", "detach": "{0}",
    "lt": "({0} < {1})", "le": "({0} <= {1})", "gt": "({0} > {1})", "ge": "({0} >= {1})",
    "and": "({0} & {1})", "or": "({0} | {1})", "fire": "tl.where({0} >= 0.0, 1.0, 0.0)",
}  # fmt: skip
NO_GRADIENT = {"detach", "lt", "le", "gt", "ge", "and", "or", "zeros_like"}


def operand(a: Any) -> str:
    """A trace value as source: its name, or a literal."""
    if isinstance(a, Var):
        return a.name
    if isinstance(a, bool):
        return repr(a)
    return repr(float(a))


def body(ops: Sequence[tuple[Var, str, tuple[Any, ...]]], indent: str) -> list[str]:
    """The step's forward, one line per operation."""
    lines = []
    for out, op, args in ops:
        if op not in FORWARD:
            raise ValueError(f"the kernels cannot write the operation {op!r}")
        lines.append(f"{indent}{out.name} = {FORWARD[op].format(*map(operand, args))}")
    return lines


class Adjoints:
    """Reverse-mode lines: ``g_<name>`` accumulates the gradient of a trace value."""

    def __init__(self, indent: str) -> None:
        self.indent, self.lines, self.names = indent, [], {}

    def add(self, v: Any, expr: str) -> None:
        if not isinstance(v, Var):
            return
        if v.name in self.names:
            g = self.names[v.name]
            self.lines.append(f"{self.indent}{g} = {g} + {expr}")
        else:
            g = self.names[v.name] = f"g_{v.name}"
            self.lines.append(f"{self.indent}{g} = {expr}")

    def of(self, v: Any) -> str | None:
        return self.names.get(v.name) if isinstance(v, Var) else None

    def back(self, ops: Sequence[tuple[Var, str, tuple[Any, ...]]]) -> None:
        """Every operation's contribution to its arguments' gradients, last operation first."""
        for out, op, args in reversed(ops):
            g = self.of(out)
            if g is None or op in NO_GRADIENT:
                continue
            a = [operand(x) for x in args]
            if op == "add":
                self.add(args[0], g)
                self.add(args[1], g)
            elif op == "sub":
                self.add(args[0], g)
                self.add(args[1], f"(-{g})")
            elif op == "mul":
                self.add(args[0], f"{g} * {a[1]}")
                self.add(args[1], f"{g} * {a[0]}")
            elif op == "div":
                self.add(args[0], f"{g} / {a[1]}")
                self.add(args[1], f"(-{g}) * {a[0]} / ({a[1]} * {a[1]})")
            elif op == "neg":
                self.add(args[0], f"(-{g})")
            elif op == "exp":
                self.add(args[0], f"{g} * {out.name}")
            elif op == "sigmoid":
                self.add(args[0], f"{g} * {out.name} * (1.0 - {out.name})")
            elif op == "abs":
                self.add(args[0], f"tl.where({a[0]} > 0.0, {g}, tl.where({a[0]} < 0.0, -{g}, 0.0))")
            elif op in ("maximum", "minimum"):
                wins = ">" if op == "maximum" else "<"
                loses = "<" if op == "maximum" else ">"
                tie = f"tl.where({a[0]} == {a[1]}, 0.5 * {g}, 0.0)"
                self.add(args[0], f"tl.where({a[0]} {wins} {a[1]}, {g}, {tie})")
                self.add(args[1], f"tl.where({a[0]} {loses} {a[1]}, {g}, {tie})")
            elif op == "where":
                self.add(args[1], f"tl.where({a[0]}, {g}, 0.0)")
                self.add(args[2], f"tl.where({a[0]}, 0.0, {g})")
            elif op == "fire":
                self.add(args[0], f"{g} * surrogate_grad({a[0]}, sg_alpha, SG)")
            else:
                raise ValueError(f"the kernels cannot differentiate the operation {op!r}")


def _param_loads(kinds: Sequence[str], indent: str) -> list[str]:
    return [
        f"{indent}p{j} = tl.load(p{j}_ptr).to(ACC)" if kind == "scalar"
        else f"{indent}p{j} = tl.load(p{j}_ptr + cols, mask=live, other=0.0).to(ACC)"
        for j, kind in enumerate(kinds)
    ]  # fmt: skip


def kernel_source(
    ops: Sequence[tuple[Var, str, tuple[Any, ...]]], spike: Any, new: Sequence[Any],
    kinds: Sequence[str],
) -> str:  # fmt: skip
    """The module text defining ``fwd`` and ``bwd`` (see the module docstring); the trace's
    inputs are named ``x``, ``q0``... (the states, the membrane last) and ``p0``..."""
    n, params = len(new), [f"p{j}_ptr" for j in range(len(kinds))]
    q = [f"q{i}" for i in range(n)]
    i12 = " " * 12
    fwd = [
        "@triton.jit",
        f"def fwd(x_ptr, {', '.join(f'{s}_ptr' for s in q)}, {''.join(p + ', ' for p in params)}"
        f"s_ptr, {', '.join(f'{s}_last_ptr' for s in q)}, ckpt_ptr, vseq_ptr, N, T,",
        "        STORE_V: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,",
        "        ACC: tl.constexpr):",
        "    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
        "    live = cols < N",
        *_param_loads(kinds, "    "),
        *(f"    {s} = tl.load({s}_ptr + cols, mask=live, other=0.0).to(ACC)" for s in q),
        "    for _c in range(tl.cdiv(T, CHUNK)):",
        "        _t0 = _c * CHUNK",
        *(
            f"        tl.store(ckpt_ptr + tl.cast({n} * _c + {i}, tl.int64) * N + cols, {s}, "
            "mask=live)"
            for i, s in enumerate(q)
        ),
        "        _base = tl.cast(_t0, tl.int64) * N + cols",
        "        for _j in tl.static_range(CHUNK):",
        "            _step = _t0 + _j < T",
        "            _m = live & _step",
        "            x = tl.load(x_ptr + _base + _j * N, mask=_m, other=0.0).to(ACC)",
        *body(ops, i12),
        *(f"            _n{i} = {operand(v)}" for i, v in enumerate(new)),
        *(f"            {s} = tl.where(_step, _n{i}, {s})" for i, s in enumerate(q)),
        f"            _s = tl.zeros([BLOCK], ACC) + {operand(spike)}",
        "            tl.store(s_ptr + _base + _j * N, _s.to(s_ptr.dtype.element_ty), mask=_m)",
        "            if STORE_V:",
        f"                tl.store(vseq_ptr + _base + _j * N, "
        f"{q[-1]}.to(vseq_ptr.dtype.element_ty), mask=_m)",
        *(f"    tl.store({s}_last_ptr + cols, {s}, mask=live)" for s in q),
    ]
    adj = Adjoints(i12)
    adj.add(spike, "_gs")
    for i, v in enumerate(new):
        adj.add(v, f"_gq{i}")
    adj.add(new[-1], "_gv")
    adj.back(ops)
    zero = "tl.zeros([BLOCK], ACC)"

    def grad(name: str) -> str:
        g = adj.names.get(name)
        return f"(tl.zeros([BLOCK], ACC) + {g})" if g else zero

    bwd = [
        "@triton.jit",
        f"def bwd(gs_ptr, gvs_ptr, {''.join(f'{s}_glast_ptr, ' for s in q)}x_ptr, ckpt_ptr, "
        f"{''.join(p + ', ' for p in params)}gx_ptr, {''.join(f'{s}_g0_ptr, ' for s in q)}"
        f"{''.join(f'gp{j}_ptr, ' for j in range(len(kinds)))}N, T, sg_alpha,",
        "        HAS_GVS: tl.constexpr, SG: tl.constexpr, CHUNK: tl.constexpr,",
        "        BLOCK: tl.constexpr, ACC: tl.constexpr):",
        "    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
        "    live = cols < N",
        "    rows = tl.arange(0, CHUNK)[:, None]",
        *_param_loads(kinds, "    "),
        *(
            f"    _gq{i} = tl.load({s}_glast_ptr + cols, mask=live, other=0.0).to(ACC)"
            for i, s in enumerate(q)
        ),
        *(f"    _gp{j} = {zero}" for j in range(len(kinds))),
        "    _chunks = tl.cdiv(T, CHUNK)",
        "    for _cc in range(_chunks):",
        "        _c = _chunks - 1 - _cc",
        "        _t0 = _c * CHUNK",
        "        _base = tl.cast(_t0, tl.int64) * N + cols",
        *(
            f"        {s} = tl.load(ckpt_ptr + tl.cast({n} * _c + {i}, tl.int64) * N + cols, "
            "mask=live, other=0.0)"
            for i, s in enumerate(q)
        ),
        *(f"        _tile{i} = tl.zeros([CHUNK, BLOCK], ACC)" for i in range(n)),
        "        for _j in tl.static_range(CHUNK):",
        "            _m = live & (_t0 + _j < T)",
        "            x = tl.load(x_ptr + _base + _j * N, mask=_m, other=0.0).to(ACC)",
        *(
            f"            _tile{i} = tl.where(rows == _j, {s}[None, :], _tile{i})"
            for i, s in enumerate(q)
        ),
        *body(ops, i12),
        *(f"            _n{i} = {operand(v)}" for i, v in enumerate(new)),
        *(f"            {s} = tl.zeros([BLOCK], ACC) + _n{i}" for i, s in enumerate(q)),
        "        for _jj in tl.static_range(CHUNK):",
        "            _j = CHUNK - 1 - _jj",
        "            _step = _t0 + _j < T",
        "            _m = live & _step",
        *(
            f"            {s} = tl.sum(tl.where(rows == _j, _tile{i}, 0.0), axis=0)"
            for i, s in enumerate(q)
        ),
        "            x = tl.load(x_ptr + _base + _j * N, mask=_m, other=0.0).to(ACC)",
        *body(ops, i12),
        "            _gs = tl.load(gs_ptr + _base + _j * N, mask=_m, other=0.0).to(ACC)",
        f"            _gv = {zero}",
        "            if HAS_GVS:",
        "                _gv = tl.load(gvs_ptr + _base + _j * N, mask=_m, other=0.0).to(ACC)",
        *adj.lines,
        f"            tl.store(gx_ptr + _base + _j * N, {grad('x')}.to(gx_ptr.dtype.element_ty),"
        " mask=_m)",
        *(f"            _gq{i} = tl.where(_step, {grad(s)}, _gq{i})" for i, s in enumerate(q)),
        *(
            f"            _gp{j} = _gp{j} + tl.where(_m, {grad(f'p{j}')}, 0.0)"
            for j in range(len(kinds))
        ),
        *(f"    tl.store({s}_g0_ptr + cols, _gq{i}, mask=live)" for i, s in enumerate(q)),
        *(f"    tl.store(gp{j}_ptr + cols, _gp{j}, mask=live)" for j in range(len(kinds))),
    ]
    return "\n".join([*fwd, "", "", *bwd, ""])
