"""Rewrites of an exported ONNX graph that keep its numbers and make ONNX Runtime faster.

- A mean over height and width that keeps its dims (``ReduceMean(axes=[2, 3], keepdims=1)`` on a 4-D
  tensor, what PyTorch exports for ``x.mean((2, 3), keepdim=True)`` and channel attention) becomes a
  ``GlobalAveragePool``: the same value; ONNX Runtime computes it on the NCHW tensor, where a
  ReduceMean in an int8 graph is moved onto the channels-last layout and reduces across strides (6x
  slower there, measured on IMDN: 77 ms vs 13 ms of kernel time over 18 images).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    found = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
    return found


def value_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """The shape of every value ONNX shape inference knows (``None`` for a dynamic dim); empty when
    inference fails (shapes are a help to the callers, not a requirement)."""
    import onnx

    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:
        return {}
    shapes = {}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return shapes


def spatial_means_to_gap(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every ReduceMean over axes (2, 3) of a 4-D tensor with keepdims=1 as a
    GlobalAveragePool. Returns how many were rewritten."""
    consts = _constants(model)
    shapes = value_shapes(model)
    done = 0
    for node in model.graph.node:
        if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: a for a in node.attribute}
        if "keepdims" in attrs and attrs["keepdims"].i != 1:
            continue
        if "noop_with_empty_axes" in attrs and attrs["noop_with_empty_axes"].i != 0:
            continue
        if len(node.input) > 1 and node.input[1]:
            axes = consts.get(node.input[1])
        elif "axes" in attrs:
            axes = np.array(list(attrs["axes"].ints))
        else:
            axes = None
        if axes is None or len(shapes.get(node.input[0], ())) != 4:
            continue
        if sorted(int(a) % 4 for a in np.ravel(axes)) != [2, 3]:
            continue
        node.op_type = "GlobalAveragePool"
        del node.input[1:]
        del node.attribute[:]
        done += 1
    if done:
        _drop_unread_initializers(model)
    return done


def _drop_unread_initializers(model: onnx.ModelProto) -> None:
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    unread = [i for i in model.graph.initializer if i.name not in read]
    for init in unread:
        model.graph.initializer.remove(init)


def optimize_exported(path: str) -> int:
    """Apply the rewrites above to the ONNX file at ``path`` (rewritten in place when any applies)."""
    import onnx

    model = onnx.load(path)
    n = spatial_means_to_gap(model)
    if n:
        onnx.checker.check_model(model)
        onnx.save(model, path)
    return n
