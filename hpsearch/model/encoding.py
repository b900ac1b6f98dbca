"""The first layers of the built-in network: how its numeric inputs are encoded, and how its target is read back.

The preprocessing standardises every numeric column (:mod:`hpsearch.data.sources`). Tabular networks learn better
from inputs whose skew and heavy tails are tamed, so the network may first re-encode the standardised numeric
columns (the first ``n_numeric`` of its inputs; one-hot columns pass through), with numbers fitted on the
training rows (:func:`fit_encoding`):

- ``standard``: as they come (scikit-learn's ``StandardScaler``);
- ``robust``: centred on the median, divided by the interquartile range, then smoothly clipped to about +-3
  (``x / sqrt(1 + (x / 3) ** 2)``): RealMLP's robust scaling (Holzmueller et al. 2024);
- ``quantile``: through the training rows' quantiles to a standard normal (scikit-learn's
  ``QuantileTransformer(output_distribution="normal")``, as Gorishniy et al. 2021 use it);
- ``piecewise_linear``: each column as ``bins`` numbers, one per quantile bin, 0 below the bin, 1 above it and
  linear inside (Gorishniy et al. 2022's piecewise-linear encoding), which lets a plain MLP bend a column freely.

The encoding is a layer without trained weights (:class:`NumericEncoding`), its fitted numbers in the model's spec,
so that it travels with every saved and served model and the served model takes the same standardised matrix as
before. ``numeric_embedding="periodic"`` adds learned periodic embeddings of the numeric columns
(:class:`PeriodicEmbedding`, Gorishniy et al. 2022's PLR). A regression target may be learned on a log scale
(``target_transform="log1p"``): :func:`to_units` turns the network's outputs back into the target's units.

Like every module of this package it travels with a published model: numpy and torch only, no scikit-learn.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["NUMERIC_ENCODINGS", "NUMERIC_EMBEDDINGS", "TARGET_TRANSFORMS", "encoded_width", "fit_encoding",
           "from_units", "to_units"]

NUMERIC_ENCODINGS = ("standard", "robust", "quantile", "piecewise_linear")
NUMERIC_EMBEDDINGS = ("none", "periodic")
TARGET_TRANSFORMS = ("none", "log1p")
#: Quantile bins per numeric column of the piecewise-linear encoding (fewer where a column has fewer values).
PIECEWISE_BINS = 16
#: The smooth clip of the robust encoding: values end up within about +-3.
ROBUST_CLIP = 3.0
#: The quantile encoding's probabilities stay within this of 0 and 1 (scikit-learn's ``BOUNDS_THRESHOLD``).
QUANTILE_BOUND = 1e-7
#: Periodic embeddings: frequencies per column, their initial scale, and the width each column becomes.
PERIODIC_FREQUENCIES, PERIODIC_SIGMA, PERIODIC_WIDTH = 16, 0.1, 8


# ------------------------------------------------------------------------------------------------ fitting
def fit_encoding(kind: str, numeric: np.ndarray) -> dict[str, Any] | None:
    """The numbers of the encoding ``kind``, fitted on the training rows' (standardised) numeric columns, as
    plain JSON data for the model's spec; None for ``standard`` or when there is no numeric column."""
    if kind == "standard" or numeric.shape[1] == 0:
        return None
    numeric = np.asarray(numeric, dtype=np.float64)
    columns = [numeric[:, j] for j in range(numeric.shape[1])]
    if kind == "robust":
        q25, median, q75 = np.percentile(numeric, [25, 50, 75], axis=0)
        spread = np.ptp(numeric, axis=0) / 2
        scale = np.where(q75 > q25, q75 - q25, np.where(spread > 0, spread, 1.0))
        return {"kind": kind, "center": median.tolist(), "scale": scale.tolist()}
    if kind == "quantile":
        count = max(min(len(numeric) // 30, 1000), 10)  # as Gorishniy et al. 2021 set scikit-learn's n_quantiles
        probabilities = np.linspace(0, 1, count)
        values, levels = zip(*(_distinct_quantiles(c, probabilities) for c in columns), strict=True)
        return {"kind": kind, "values": _padded(values), "levels": _padded(levels),
                "counts": [len(v) for v in values]}
    if kind == "piecewise_linear":
        edges = [np.unique(np.quantile(c, np.linspace(0, 1, PIECEWISE_BINS + 1))) for c in columns]
        edges = [e if len(e) > 1 else np.array([e[0], e[0] + 1.0]) for e in edges]  # a constant: one bin
        return {"kind": kind, "edges": _padded(edges), "bins": [len(e) - 1 for e in edges]}
    raise ValueError(f"unknown numeric encoding {kind!r}; the encodings are: {', '.join(NUMERIC_ENCODINGS)}")


def _distinct_quantiles(column: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A column's quantiles without repeats: a value that several quantiles share gets their mean level."""
    quantiles = np.quantile(column, probabilities)
    values, inverse = np.unique(quantiles, return_inverse=True)
    if len(values) == 1:  # a constant column: the middle of the normal at its value, a line through it
        return np.array([values[0] - 1.0, values[0] + 1.0]), np.array([0.0, 1.0])
    levels = np.bincount(inverse, weights=probabilities) / np.bincount(inverse)
    return values, levels


def _padded(rows: Any) -> list[list[float]]:
    """Rows of different lengths as one rectangle (each padded with its last value)."""
    width = max(len(r) for r in rows)
    return [[*map(float, r), *[float(r[-1])] * (width - len(r))] for r in rows]


def encoded_width(encoding: dict[str, Any] | None, n_features: int, n_numeric: int) -> int:
    """The network's input width after the encoding: the piecewise-linear one widens each numeric column."""
    if encoding is None or encoding["kind"] != "piecewise_linear":
        return n_features
    bins = len(encoding["edges"][0]) - 1
    return n_features + n_numeric * (bins - 1)


# ------------------------------------------------------------------------------------------ target's units
def to_units(outputs: Any, target_mean: float, target_std: float, transform: str = "none",
             transform_mean: float = 0.0, transform_std: float = 1.0) -> Any:
    """A regression network's outputs (numpy or torch) in the target's units.

    The network learns the standardised target (``transform="none"``: ``target_mean``, ``target_std``) or the
    standardised ``log1p`` of it (``transform_mean``, ``transform_std``)."""
    if transform == "log1p":
        scaled = outputs * transform_std + transform_mean
        return scaled.expm1() if hasattr(scaled, "expm1") else np.expm1(scaled)
    return outputs * target_std + target_mean


def from_units(values: np.ndarray, transform: str) -> np.ndarray:
    """The target in the scale the network learns, before standardising: the inverse of :func:`to_units`."""
    return np.log1p(values) if transform == "log1p" else values


# ----------------------------------------------------------------------------------------------- layers
def build_input_layers(spec: Any) -> tuple[list[nn.Module], int]:
    """The layers in front of the MLP for a model spec (:class:`hpsearch.model.network.ModelSpec`), and the
    width they output."""
    n_numeric = spec.n_numeric
    layers: list[nn.Module] = []
    width = spec.n_features
    if spec.encoding is not None:
        layers.append(NumericEncoding(spec.encoding, n_numeric))
        width = encoded_width(spec.encoding, spec.n_features, n_numeric)
        n_numeric = width - (spec.n_features - n_numeric)
    if spec.numeric_embedding == "periodic" and n_numeric:
        layers.append(PeriodicEmbedding(n_numeric))
        width += n_numeric * (PERIODIC_WIDTH - 1)
    return layers, width


class NumericEncoding(nn.Module):
    """The fitted encoding of the first ``n_numeric`` inputs as a layer: buffers, no trained weights."""

    def __init__(self, encoding: dict[str, Any], n_numeric: int) -> None:
        super().__init__()
        self.kind, self.n_numeric = encoding["kind"], n_numeric
        tensor = lambda key: torch.tensor(encoding[key], dtype=torch.get_default_dtype())  # noqa: E731
        if self.kind == "robust":
            self.register_buffer("center", tensor("center"))
            self.register_buffer("scale", tensor("scale"))
        elif self.kind == "quantile":
            self.register_buffer("values", tensor("values"))
            self.register_buffer("levels", tensor("levels"))
            self.register_buffer("last", torch.tensor(encoding["counts"]).clamp(min=2)[:, None] - 1)
        else:
            edges, bins = tensor("edges"), torch.tensor(encoding["bins"])[:, None]
            position = torch.arange(edges.shape[1] - 1).expand(len(bins), -1)
            real = position < bins
            zero, one, inf = torch.zeros(()), torch.ones(()), torch.tensor(math.inf)
            self.register_buffer("low", edges[:, :-1])
            self.register_buffer("width", torch.where(real, edges[:, 1:] - edges[:, :-1], one))
            # 0 below a bin, 1 above it; the first bin is open below and the last real one above; padding is 0
            self.register_buffer("floor", torch.where(real, torch.where(position == 0, -inf, zero), zero))
            self.register_buffer("ceiling", torch.where(real, torch.where(position == bins - 1, inf, one), zero))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        numeric, rest = x[:, : self.n_numeric], x[:, self.n_numeric :]
        if self.kind == "robust":
            z = (numeric - self.center) / self.scale
            encoded = z / torch.sqrt(1 + (z / ROBUST_CLIP) ** 2)
        elif self.kind == "quantile":
            encoded = self._quantile(numeric)
        else:
            ratio = (numeric.unsqueeze(2) - self.low) / self.width
            encoded = torch.maximum(torch.minimum(ratio, self.ceiling), self.floor).flatten(1)
        return torch.cat([encoded.to(x.dtype), rest], 1)

    def _quantile(self, numeric: torch.Tensor) -> torch.Tensor:
        """Each column's level interpolated between its distinct quantiles, then the normal's inverse CDF."""
        columns = numeric.T.contiguous()  # (n_numeric, rows): searchsorted searches each row of values
        upper = torch.searchsorted(self.values, columns).clamp(min=torch.ones_like(self.last), max=self.last)
        low_v, high_v = self.values.gather(1, upper - 1), self.values.gather(1, upper)
        low_p, high_p = self.levels.gather(1, upper - 1), self.levels.gather(1, upper)
        share = ((columns - low_v) / (high_v - low_v).clamp(min=1e-12)).clamp(0, 1)
        level = (low_p + share * (high_p - low_p)).clamp(QUANTILE_BOUND, 1 - QUANTILE_BOUND)
        return torch.special.ndtri(level).T

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.n_numeric} numeric columns"


class PeriodicEmbedding(nn.Module):
    """Each of the first ``n_numeric`` inputs as the sine and cosine of learned frequencies, then a small linear
    layer shared by the columns and a ReLU (PLR, Gorishniy et al. 2022); the other inputs pass through."""

    def __init__(self, n_numeric: int) -> None:
        super().__init__()
        self.n_numeric = n_numeric
        self.frequencies = nn.Parameter(torch.randn(n_numeric, PERIODIC_FREQUENCIES) * PERIODIC_SIGMA)
        self.linear = nn.Linear(2 * PERIODIC_FREQUENCIES, PERIODIC_WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        numeric, rest = x[:, : self.n_numeric], x[:, self.n_numeric :]
        z = 2 * math.pi * self.frequencies * numeric.unsqueeze(2)
        embedded = torch.relu(self.linear(torch.cat([torch.sin(z), torch.cos(z)], 2)))
        return torch.cat([embedded.flatten(1), rest], 1)
