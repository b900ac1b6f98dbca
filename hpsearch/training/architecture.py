"""The best model's architecture, readable: a layer table with output shapes and parameter counts, and a graph.

The table comes from one forward pass of a single example with hooks on every layer, so the shapes are the
ones the model really produces. The graph is Graphviz DOT source rendered by ``dot`` where Graphviz is
installed (Debian: ``apt-get install graphviz``); without it the text summary is all there is.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import torch
from torch import nn

from hpsearch.model import user_model
from hpsearch.model.folds import fold_specs
from hpsearch.model.network import ModelSpec

__all__ = ["graph_png", "layer_table", "summary", "to_dot"]


def layer_table(model: nn.Module, n_features: int | tuple[int, ...]) -> list[tuple[str, str, tuple[int, ...], int]]:
    """``(name, layer, output shape, parameters)`` for each layer, in order, for a batch of one.

    ``n_features`` is one example's width, or its shape (images); a layer the forward pass skips, or one that
    returns no tensor, has the shape ``()``."""
    shape = (n_features,) if isinstance(n_features, int) else tuple(n_features)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [module.register_forward_hook(
        lambda m, i, out, name=name: shapes.__setitem__(name, tuple(getattr(out, "shape", ()))))
        for name, module in model.named_children()]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return [(name, repr(module), shapes.get(name, ()), sum(p.numel() for p in module.parameters()))
            for name, module in model.named_children()]


def summary(model: nn.Module, spec: ModelSpec) -> str:
    """A fixed-width table of the layers and the totals, as logged to ``plots/architecture.txt``; for the space
    file's own model, torch's description of it (:func:`hpsearch.model.user_model.summary`)."""
    if spec.folds:  # a cross-validated trial's model: its first fold's network, and how many are averaged
        return (f"the average of {len(spec.folds)} networks, one per fold of the training rows (cv); the first:\n"
                + summary(model.members[0], fold_specs(spec)[0]))
    if spec.user_model is not None:
        return user_model.summary(model, spec)
    rows = layer_table(model, spec.n_features)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = max(len(r[1]) for r in rows)
    lines = [
        f"MLP for a {spec.task} task: {spec.n_features} features in, {spec.n_outputs} outputs",
        f"hidden layers {list(spec.hidden_sizes)}, activation {spec.activation}, dropout {spec.dropout:g}",
        "",
        f"{'#':>3}  {'layer':<{width}}  {'output shape':<14}  {'parameters':>10}",
        f"{'':>3}  {'input':<{width}}  {str([1, spec.n_features]):<14}  {'':>10}",
    ]
    lines += [f"{name:>3}  {layer:<{width}}  {str(list(shape)):<14}  {params:>10,}"
              for name, layer, shape, params in rows]
    lines += ["", f"total parameters: {total:,} ({trainable:,} trainable)"]
    return "\n".join(lines) + "\n"


def to_dot(model: nn.Module, spec: ModelSpec) -> str:
    """Graphviz DOT source: one box per layer, top to bottom, labelled with its output shape and parameters (of a
    cross-validated trial's model, its first fold's network)."""
    if spec.folds:
        return to_dot(model.members[0], fold_specs(spec)[0])
    shape_in = spec.input_shape or (spec.n_features,)
    nodes = [f'  input [label="input\\n{[1, *shape_in]}", shape=ellipse];']
    edges, previous = [], "input"
    for name, layer, shape, params in layer_table(model, shape_in):
        label = f"{layer}\\n{list(shape)}" + (f"\\n{params:,} params" if params else "")
        nodes.append(f'  l{name} [label="{label}"];')
        edges.append(f"  {previous} -> l{name};")
        previous = f"l{name}"
    header = "digraph model {\n  node [shape=box, fontname=Helvetica, fontsize=10];\n"
    return header + "\n".join(nodes + edges) + "\n}\n"


def graph_png(dot_source: str, path: Path) -> bool:
    """Render DOT source to a PNG with Graphviz; False (and no file) where ``dot`` is not installed."""
    dot = shutil.which("dot")
    if dot is None:
        return False
    subprocess.run([dot, "-Tpng", "-o", str(path)], input=dot_source, text=True, check=True, timeout=60,
                   capture_output=True)
    return True
