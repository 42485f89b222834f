"""Unary networks: a small output-stride-8 FCN whose coarse logits the CRF-RNN refines."""

from lab.models.fcn import FCN

__all__ = ["FCN"]
