"""RunResult.labels: the arg-max maps of Q_0 … Q_T, each made when first read."""

import numpy as np
import pytest
import torch
from inputs import synthetic_photo, synthetic_unary

from lab.crf import CRFParams
from lab.explore import LabelMaps, build_kernels, run_crf, to_tensor


def test_label_maps_are_each_qs_arg_max_made_only_when_read():
    image = synthetic_photo(24, 30, seed=2)
    unary = synthetic_unary(5, 24, 30, seed=2)
    kernels, _ = build_kernels(to_tensor(image), CRFParams())
    result = run_crf(unary, to_tensor(image), CRFParams(), 4, kernels)
    maps = result.labels
    assert isinstance(maps, LabelMaps) and len(maps) == 5 and not maps._maps  # nothing made yet
    last = maps[-1]
    assert list(maps._maps) == [4]  # only the map read
    for t, q in enumerate(result.trace.history):
        np.testing.assert_array_equal(maps[t], q[0].numpy().argmax(0))  # numpy's arg-max as the reference
    assert maps[4] is last and [m.shape for m in maps[-3:]] == [(24, 30)] * 3
    assert len(list(maps)) == 5 and maps[1:3][0] is maps[1]
    with pytest.raises(IndexError, match="index 5 out of range for 5 maps"):
        maps[5]
    with pytest.raises(IndexError):
        maps[-6]
    assert np.array_equal(LabelMaps([torch.tensor([[[[0.1]], [[0.7]], [[0.2]]]])])[0], [[1]])
