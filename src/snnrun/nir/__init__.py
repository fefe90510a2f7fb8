"""NIR (the Neuromorphic Intermediate Representation): export a network, import a graph.

Importing the package registers the ``nir`` layer type (``model=nir``) in
:data:`snnrun.net.layers.LAYERS`.
"""

from snnrun.nir import graph  # noqa: F401  (registers the "nir" layer type)
