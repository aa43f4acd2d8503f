"""The online scorer: raw records (dicts), one or a request of many at a time, in numpy.

An independent re-implementation of the batch path — numpy and scipy.sparse, no torch; the sparse sums
and dot interactions in native float64 kernels (csrc/online.c) where they are built — that parity tests
hold equal to it. For record r: (ids, values) = feature_map.encode_record(r);
s_i = v_i / max(max_abs_i, |v_i|); h = F(Σ_i W[id_i] · (s_i + b_i) + B); with interactions,
x = [h, (g_a · g_b)_{a<b}] for g = [P·h + c, V[id_1]·s_1, …, V[id_F]·s_F]; then the MLP.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from . import native
from .bundle import Bundle

BLOCK_ROWS = 128  # the head runs 128 candidates at a time: every temporary stays small enough to be
# reused from the heap instead of freshly mapped (page faults were most of a 1,000-candidate request)


def _act(name: str, x: np.ndarray, prelu: np.ndarray | None = None) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "prelu":
        return np.where(x >= 0, x, prelu * x)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    return x


class OnlineScorer:
    """Scores dicts of raw feature values; `score(record) -> float`, `score_many(records) -> list`."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        w = {k: np.asarray(v, dtype=np.float64) for k, v in bundle.weights.items()}
        spec = bundle.spec.model
        self.table, self.max_abs = w["sparse.weight"], w["sparse.max_abs"]
        self.id_bias = w["sparse.id_bias"].reshape(-1)
        self.bias = w["sparse.bias"]
        self.sparse_act = (spec.sparse_linear.activation, w.get("sparse.act.weight"))
        self.interactions = None
        if spec.interactions is not None:
            n = len(bundle.feature_map.encoders) + 1
            upper = np.triu_indices(n, 1)
            self.interactions = (w["interactions.embedding.weight"], w["interactions.project.weight"].T.copy(),
                                 w["interactions.project.bias"], upper[0] * n + upper[1])
        # mirror SparseNN's Sequential layout: Linear [norm] act [dropout] ... Linear
        self.layers = []
        index = 0
        for _ in spec.mlp.layers:
            self.layers.append(("linear", w[f"mlp.{index}.weight"].T.copy(), w[f"mlp.{index}.bias"]))
            index += 1
            if spec.mlp.norm == "batch":
                scale = w[f"mlp.{index}.weight"] / np.sqrt(w[f"mlp.{index}.running_var"] + 1e-5)
                self.layers.append(("affine", scale, w[f"mlp.{index}.bias"] - w[f"mlp.{index}.running_mean"] * scale))
                index += 1
            elif spec.mlp.norm == "layer":
                self.layers.append(("layernorm", w[f"mlp.{index}.weight"], w[f"mlp.{index}.bias"]))
                index += 1
            self.layers.append(("act", spec.mlp.activation, w.get(f"mlp.{index}.weight")))
            index += 1
            if spec.mlp.dropout:
                index += 1
        self.layers.append(("linear", w[f"mlp.{index}.weight"].T.copy(), w[f"mlp.{index}.bias"]))
        if self.interactions is not None:  # the first layer reads [h, pairs]: split its weight by rows, so
            _, weight, bias = self.layers[0]  # h @ W_h + pairs @ W_p needs no concatenated copy (4x faster)
            width = spec.sparse_linear.width
            self.layers[0] = ("split linear", (weight[:width].copy(), weight[width:].copy()), bias)

    def raw(self, record: dict) -> float:
        ids, values = self.bundle.feature_map.encode_record(record)
        return float(self.raw_encoded(np.asarray(ids)[None, :], np.asarray(values, dtype=np.float64)[None, :])[0])

    def raw_encoded(self, ids: np.ndarray, v: np.ndarray) -> np.ndarray:
        """ids [n, F], values [n, F] -> raw probabilities [n]."""
        ids, v = np.ascontiguousarray(ids, dtype=np.int64), np.ascontiguousarray(v, dtype=np.float64)
        lib = native.library()
        scaled, pre = (self._sparse(ids, v) if lib is None else  # or in one native pass (csrc/online.c)
                       native.online_sparse(lib, ids, v, self.table, self.max_abs, self.id_bias, self.bias))
        h = _act(self.sparse_act[0], pre, self.sparse_act[1])
        n = len(ids)
        unit_scales = lib is None and bool((scaled == 1.0).all())  # numpy pairs skip a multiply
        logit = np.concatenate([self._head(h[start:start + BLOCK_ROWS], ids[start:start + BLOCK_ROWS],
                                           scaled[start:start + BLOCK_ROWS], unit_scales)
                                for start in range(0, n, BLOCK_ROWS)])
        small = np.exp(-np.abs(logit))  # σ without overflow: 1/(1+e^-|x|) for x >= 0, e^-|x|/(1+e^-|x|) below
        return np.where(logit >= 0, 1.0, small) / (1.0 + small)

    def _sparse(self, ids: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ids [n, F], values [n, F] -> (scaled values s [n, F], the sparse layer before its activation
        [n, width]), in numpy and scipy."""
        scaled = v / np.maximum(np.maximum(np.take(self.max_abs, ids), np.abs(v)), 1e-12)
        n, fields = ids.shape
        rows = csr_matrix(((scaled + np.take(self.id_bias, ids)).ravel(), ids.ravel(), np.arange(n + 1) * fields),
                          shape=(n, len(self.table)))
        return scaled, rows @ self.table + self.bias

    def _head(self, h: np.ndarray, ids: np.ndarray, scaled: np.ndarray, unit_scales: bool) -> np.ndarray:
        """Sparse-layer outputs h [b, width] (and the entries' ids, scaled values [b, F]) -> logits [b]."""
        if self.interactions is not None:
            h = (h, self._pairs(h, ids, scaled, unit_scales))
        for layer in self.layers:
            if layer[0] == "linear":
                h = h @ layer[1] + layer[2]
            elif layer[0] == "split linear":
                h = h[0] @ layer[1][0] + h[1] @ layer[1][1] + layer[2]
            elif layer[0] == "affine":
                h = h * layer[1] + layer[2]
            elif layer[0] == "layernorm":
                mean, var = h.mean(axis=1, keepdims=True), h.var(axis=1, keepdims=True)
                h = (h - mean) / np.sqrt(var + 1e-5) * layer[1] + layer[2]
            else:
                h = _act(layer[1], h, layer[2])
        return h[:, 0]

    def _pairs(self, h: np.ndarray, ids: np.ndarray, scaled: np.ndarray, unit_scales: bool) -> np.ndarray:
        """h [n, width] -> the upper triangle of G Gᵀ [n, (F+1)F/2], G [n, F+1, d] (the MLP reads
        [h, pairs]); `unit_scales`: every scaled value is exactly 1 (skip the multiply)."""
        table, project, project_bias, pairs = self.interactions
        lib = native.library()
        if lib is not None:  # G built and dotted row by row in one native pass (csrc/online.c)
            return native.online_pairs(lib, h @ project + project_bias, table, ids, scaled)
        g = np.empty((len(h), ids.shape[1] + 1, table.shape[1]))
        np.matmul(h, project, out=g[:, 0])
        g[:, 0] += project_bias
        if unit_scales:  # one-hot entries (v = 1 = max |v|): the embeddings as they are
            g[:, 1:] = np.take(table, ids, axis=0)
        else:
            np.multiply(np.take(table, ids, axis=0), scaled[:, :, None], out=g[:, 1:])
        gram = np.matmul(g, g.transpose(0, 2, 1)).reshape(len(h), -1)
        return np.take(gram, pairs, axis=1)

    def score(self, record: dict) -> float:
        return float(self.bundle.finish(np.array([self.raw(record)]))[0])

    def raw_many(self, records: list[dict]) -> np.ndarray:
        """One request of many candidates, encoded and scored together: raw probabilities [n]."""
        return self.raw_encoded(*self.bundle.feature_map.encode_records(records))

    def score_many(self, records: list[dict]) -> np.ndarray:
        """One request of many candidates, encoded and scored together: final scores [n]."""
        return self.bundle.finish(self.raw_many(records))
