"""Spiking self-attention (Spikformer, Zhou et al., ICLR 2023): the ``spiking_self_attention``
layer entry."""
