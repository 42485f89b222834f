"""The lattice's splat, blur and slice as Triton kernels (GPU, or the interpreter): :class:`TritonOps`."""

from lab.lattice.triton.ops import TritonOps

__all__ = ["TritonOps"]
