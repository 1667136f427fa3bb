"""A graph's forward lets go of the previous pass's layer outputs before it computes the new ones (nn/graph.py):
a step's peak then holds one set of activations, not two (yolov3-tiny 416 batch-8 inference: peak RSS 641 ->
384 MB, bench/yolo.py)."""
import weakref

import numpy as np

from deltaprop import backend, darknet
from darknet_testutil import TINY_GRAPH_CFG


def test_previous_outputs_released_before_the_next_pass(rng):
    net = darknet.load_cfg_text(TINY_GRAPH_CFG, dtype=np.float64)
    net.eval()
    x = rng.normal(size=(2,) + tuple(net.input_shape))
    with backend.no_grad():
        net(x)
    first = weakref.ref(net.layer_outputs[0])
    seen = []
    layer = net.layers[1]
    inner = layer.forward

    def spy(a):
        seen.append(first() is None)
        return inner(a)
    object.__setattr__(layer, "forward", spy)
    with backend.no_grad():
        out = net(x)
    assert seen == [True]
    assert len(net.layer_outputs) == len(net.layers) and net.layer_outputs[-1] is out
