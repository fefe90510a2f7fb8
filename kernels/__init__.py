"""Fused Triton neuron kernels, shipped as ``snnrun.kernels`` (top-level ``kernels/`` in the repo).

Importing this package registers the ``triton`` neuron backend.
"""
