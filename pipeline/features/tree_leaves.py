"""Tree leaves as sparse ids (He et al. 2014, "Practical lessons from predicting clicks on ads at
Facebook"): gradient-boosted trees fitted on the train split in the prepare step; each tree's leaf
a row falls into becomes one id.

    inputs -> x [n, k] float64: a number column (numbers, or text that is numbers in the train
              sample) as its number (missing: NaN); any other column as the dense rank of its
              value's smoothed train positive rate (ascending, ties one code; values with fewer
              than RARE_ROWS sample rows, unseen or missing: NaN), the order that makes one
              numeric split the best binary partition of categories; the trees fit on out-of-fold
              codes (each row's value rated without its fold's rows, placed on the same scale), so
              no row's own label moves the code it was fitted on
    tree t -> leaf_t(x): from the root, go left when x[feature] <= threshold (NaN: the node's
              learned missing direction) until a leaf; leaves numbered in node order
    ids    -> offset + first_leaf_t + leaf_t(x), one entry per tree (value 1): an id list of
              exactly `trees` entries per row (size Σ_t leaves_t)

The trees are scikit-learn's HistGradientBoostingClassifier (chosen over LightGBM by bench B9: the
same trees on the same coded inputs score as well or better on the test rows, Adult 0.9249 vs
0.9239 and Criteo 0.7164 vs 0.7160; LightGBM fits 1.6-2.2x faster, 0.27 vs 0.44 s on Adult, which
at a sample of at most `sample_rows` rows does not pay for another dependency), fitted on a seeded
uniform sample of
the train rows (`sample_rows`, bottom-k of random keys across chunks, so the sample does not depend
on the chunk size), with the rows' weights. They are kept as plain arrays (feature, threshold,
missing direction, children per node) in the feature map — no pickle — and walked by one numpy
function for both the batch and the online path. tests/features/test_tree_leaves.py holds the walk
equal to scikit-learn's own prediction: Σ_t value(leaf_t) + baseline = its decision function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ..errors import InputError
from .spec import TreeLeavesFeature
from .values import as_float, category_of, category_text, number_of

RATE_PRIOR_ROWS = 20.0  # a category's positive rate is shrunk toward the mean as if it had 20 more rows
CODING_FOLDS = 5  # the trees fit on out-of-fold codes of text inputs
RARE_ROWS = 30  # text values with fewer sample rows are coded missing: a rare value's rate is mostly its own labels


@dataclass
class TreeLeavesEncoder:
    """The fitted trees. `trees`: per tree, node arrays "feature", "threshold", "missing_left",
    "left", "right" (lists of equal length; `left` -1 at a leaf). `categories`: per text input, each
    coded value's code (values not there are missing)."""

    name: str
    inputs: list[str]
    trees: list[dict[str, list]] = field(default_factory=list)
    categories: dict[str, dict[str, int]] = field(default_factory=dict)
    offset: int = 0

    kind = "tree_leaves"
    one_hot = True
    number_kinds = 0  # a request's inputs are read through `encode_records`

    def __post_init__(self) -> None:
        self._nodes = [_TreeArrays.of(tree, len(self.inputs)) for tree in self.trees]
        if not self._nodes or set(self.categories) - set(self.inputs):
            raise ValueError(f"tree feature {self.name!r} has no trees or codes for columns it does not read")
        self._first_leaf = np.cumsum([0] + [t.leaves for t in self._nodes])
        self._codes = self.categories

    @property
    def size(self) -> int:
        return int(self._first_leaf[-1])

    @property
    def tree_count(self) -> int:
        return len(self._nodes)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """x float64 [n, k] -> each row's leaf in each tree as local ids int64 [n, trees]."""
        out = np.empty((len(x), len(self._nodes)), dtype=np.int64)
        for t, tree in enumerate(self._nodes):
            out[:, t] = tree.leaf_of(x) + self._first_leaf[t]
        return out

    def inputs_of_frame(self, frame: pl.DataFrame) -> np.ndarray:
        """The batch path's x float64 [n, k]."""
        return frame_inputs(frame, self.inputs, self._codes, self.name)

    def inputs_of_records(self, records: list[dict]) -> np.ndarray:
        """The online path's x float64 [n, k], from the same rules value by value."""
        x = np.empty((len(records), len(self.inputs)))
        for j, column in enumerate(self.inputs):
            codes = self._codes.get(column)
            for r, record in enumerate(records):
                raw = record.get(column)
                if codes is not None:
                    code = codes.get(category_of(raw))  # type: ignore[arg-type]  # None is never a key
                    x[r, j] = np.nan if code is None else code
                else:
                    try:
                        number = number_of(raw)
                    except InputError as exc:
                        raise InputError(f"column {column!r}: {exc}") from None
                    x[r, j] = np.nan if number is None else number
        return _finite_or_missing(x, self.inputs, self.name)

    def encode_frame(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch: global ids int64 [n · trees] (row-major), values float32 of 1, entries per row [n]."""
        ids = self.leaves(self.inputs_of_frame(frame)).reshape(-1) + self.offset
        return ids, np.ones(len(ids), np.float32), np.full(frame.height, self.tree_count, np.int64)

    def encode_records(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Online: local ids int64 [n · trees], values float64 of 1, entries per candidate [n]."""
        ids = self.leaves(self.inputs_of_records(records)).reshape(-1)
        return ids, np.ones(len(ids)), np.full(len(records), self.tree_count, np.int64)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "inputs": self.inputs,
            "trees": self.trees,
            "categories": self.categories,
            "offset": self.offset,
        }


def frame_inputs(frame: pl.DataFrame, inputs: list[str], codes: dict[str, dict[str, int]], name: str) -> np.ndarray:
    """The trees' inputs of a frame, x float64 [n, k]: numbers as numbers, text through `codes`."""
    x = np.empty((frame.height, len(inputs)))
    for j, column in enumerate(inputs):
        series = frame[column]
        if column in codes:
            coded = category_text(series).replace_strict(codes[column], default=None, return_dtype=pl.Float64)
            x[:, j] = coded.fill_null(np.nan).to_numpy()
        else:
            x[:, j] = as_float(series, column).fill_null(np.nan).to_numpy()
    return _finite_or_missing(x, inputs, name)


def _finite_or_missing(x: np.ndarray, inputs: list[str], name: str) -> np.ndarray:
    if np.isinf(x).any():
        column = inputs[int(np.flatnonzero(np.isinf(x).any(axis=0))[0])]
        raise InputError(f"column {column!r} (an input of tree feature {name!r}) has infinite values")
    return x


@dataclass
class _TreeArrays:
    """One tree as numpy arrays over its nodes: feature int64, threshold float64, missing_left bool,
    left and right int64 (-1 at leaves), leaf_number int64 (the leaf's number, -1 inside)."""

    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf_number: np.ndarray
    depth: int

    @property
    def leaves(self) -> int:
        return int((self.leaf_number >= 0).sum())

    @classmethod
    def of(cls, tree: dict[str, list], inputs: int) -> _TreeArrays:
        arrays = [np.asarray(tree[k]) for k in ("feature", "threshold", "missing_left", "left", "right")]
        feature, threshold, missing_left, left, right = arrays
        nodes = len(feature)
        is_leaf = left < 0
        if (
            nodes == 0
            or any(len(a) != nodes for a in arrays)
            or not np.isfinite(threshold[~is_leaf].astype(np.float64)).all()
            or ((feature[~is_leaf] < 0) | (feature[~is_leaf] >= inputs)).any()
            or ((left[~is_leaf] <= np.flatnonzero(~is_leaf)) | (left[~is_leaf] >= nodes)).any()
            or ((right[~is_leaf] <= np.flatnonzero(~is_leaf)) | (right[~is_leaf] >= nodes)).any()
        ):
            raise ValueError("a tree's node arrays are inconsistent")
        leaf_number = np.where(is_leaf, np.cumsum(is_leaf) - 1, -1)
        depth = np.zeros(nodes, dtype=np.int64)
        for node in np.flatnonzero(~is_leaf):  # children come after their parent
            depth[left[node]] = depth[right[node]] = depth[node] + 1
        return cls(
            feature.astype(np.int64),
            threshold.astype(np.float64),
            missing_left.astype(bool),
            left.astype(np.int64),
            right.astype(np.int64),
            leaf_number,
            int(depth.max()),
        )

    def leaf_of(self, x: np.ndarray) -> np.ndarray:
        """x float64 [n, k] -> leaf numbers int64 [n]: every row walks one level per step."""
        node = np.zeros(len(x), dtype=np.int64)
        rows = np.arange(len(x))
        for _ in range(self.depth):
            inside = self.left[node] >= 0
            value = x[rows, np.where(inside, self.feature[node], 0)]
            go_left = np.where(np.isnan(value), self.missing_left[node], value <= self.threshold[node])
            node = np.where(inside, np.where(go_left, self.left[node], self.right[node]), node)
        return self.leaf_number[node]


def trees_of(model) -> list[dict[str, list]]:
    """A fitted HistGradientBoostingClassifier's trees (binary: one predictor per iteration) as the
    node arrays TreeLeavesEncoder stores."""
    trees = []
    for (predictor,) in model._predictors:  # binary classification: one tree per iteration
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        trees.append(
            {
                "feature": np.where(leaf, -1, nodes["feature_idx"].astype(np.int64)).tolist(),
                # a split of missing from present values has threshold +inf: the largest float splits
                # every finite number (inputs are finite) the same way, and stays plain JSON
                "threshold": np.where(leaf, 0.0, np.minimum(nodes["num_threshold"], np.finfo(float).max)).tolist(),
                "missing_left": nodes["missing_go_to_left"].astype(bool).tolist(),
                "left": np.where(leaf, -1, nodes["left"].astype(np.int64)).tolist(),
                "right": np.where(leaf, -1, nodes["right"].astype(np.int64)).tolist(),
            }
        )
    return trees


class TreeLeavesFitter:
    """Collects a seeded uniform sample of the train rows' inputs, labels and weights chunk by chunk
    (bottom-k of random keys), then fits the trees on it in `finish`."""

    def __init__(self, feature: TreeLeavesFeature):
        self.feature = feature
        self.random = np.random.default_rng(feature.seed)
        self.parts: list[tuple[np.ndarray, pl.DataFrame, np.ndarray, np.ndarray]] = []
        self.held = 0

    def update_frame(
        self, frame: pl.DataFrame, labels: np.ndarray, weights: np.ndarray, rows: np.ndarray | None = None
    ) -> None:
        part = frame.select(self.feature.inputs)
        if rows is not None:
            part, labels, weights = part.filter(pl.Series(rows)), labels[rows], weights[rows]
        keys = self.random.random(part.height)
        self.parts.append((keys, part, np.asarray(labels, np.float64), np.asarray(weights, np.float64)))
        self.held += part.height
        if self.held > 2 * self.feature.sample_rows:
            self.parts = [self._sample()]
            self.held = self.parts[0][1].height

    def _sample(self) -> tuple[np.ndarray, pl.DataFrame, np.ndarray, np.ndarray]:
        """The rows with the sample_rows smallest keys so far, in key order."""
        keys = np.concatenate([p[0] for p in self.parts])
        order = np.argsort(keys, kind="stable")[: self.feature.sample_rows]
        frame = pl.concat([p[1] for p in self.parts], how="vertical_relaxed")[order]
        labels, weights = (np.concatenate([p[i] for p in self.parts])[order] for i in (2, 3))
        return keys[order], frame, labels, weights

    def finish(self) -> TreeLeavesEncoder:
        from sklearn.ensemble import HistGradientBoostingClassifier

        _, frame, labels, weights = self._sample()
        folds = np.arange(frame.height) % CODING_FOLDS  # the sample is in random order
        x, codes = fit_inputs(frame, list(self.feature.inputs), labels, weights, folds, self.feature.name)
        model = HistGradientBoostingClassifier(
            max_iter=self.feature.trees,
            learning_rate=self.feature.learning_rate,
            max_leaf_nodes=self.feature.max_leaf_nodes,
            min_samples_leaf=self.feature.min_samples_leaf,
            early_stopping=False,
            random_state=self.feature.seed,
        )
        model.fit(x, labels > 0.5, sample_weight=weights)
        return TreeLeavesEncoder(self.feature.name, list(self.feature.inputs), trees_of(model), codes)


def fit_inputs(
    frame: pl.DataFrame, inputs: list[str], labels: np.ndarray, weights: np.ndarray, folds: np.ndarray, name: str
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """What the trees fit on: x float64 [n, k] (text inputs as out-of-fold codes, `folds` [n] the
    rows' folds: a row's own label never moves the code it is fitted on) and the serving codes of
    the text inputs (`_coding`)."""
    codes, rates = {}, {}
    for column in inputs:
        if not _numbers(frame[column]):
            codes[column], rates[column] = _coding(category_text(frame[column]), labels, weights)
    x = frame_inputs(frame, inputs, codes, name)
    for j, column in enumerate(inputs):
        if column in codes:
            text = category_text(frame[column])
            x[:, j] = _out_of_fold_codes(text, labels, weights, folds, codes[column], rates[column])
    return x, codes


def _numbers(series: pl.Series) -> bool:
    """A column the trees read as numbers: numeric, boolean, or text whose every value is a number
    (CSV columns may arrive as text)."""
    if series.dtype.is_numeric() or series.dtype in (pl.Boolean, pl.Null):
        return True
    cast = series.cast(pl.Float64, strict=False)  # as `as_float` reads it
    return not (cast.is_null() & series.is_not_null()).any()


def _rates(text: pl.Series, labels: np.ndarray, weights: np.ndarray) -> pl.DataFrame:
    """A text column's values, their rows and their weighted positive rates, shrunk toward the
    overall rate by RATE_PRIOR_ROWS rows: a frame of value, rows, rate."""
    frame = pl.DataFrame({"value": text, "positive": (labels > 0.5) * weights, "weight": weights})
    prior = float((labels > 0.5) @ weights) / max(float(weights.sum()), 1e-12)
    return (
        frame.drop_nulls("value")
        .group_by("value")
        .agg(pl.len().alias("rows"), pl.col("positive").sum(), pl.col("weight").sum())
        .select(
            "value", "rows", rate=(pl.col("positive") + prior * RATE_PRIOR_ROWS) / (pl.col("weight") + RATE_PRIOR_ROWS)
        )
    )


def _coding(text: pl.Series, labels: np.ndarray, weights: np.ndarray) -> tuple[dict[str, int], np.ndarray]:
    """The serving codes of a text input: each value with at least RARE_ROWS sample rows -> the
    dense rank of its rate (values of one rate share a code; rarer values are missing), and the
    distinct rates in code order (float64 [codes]). The codes are listed by value, so the
    fitted map is the same bytes on every run (a group-by's order is not)."""
    kept = _rates(text, labels, weights).filter(pl.col("rows") >= RARE_ROWS).sort("value")
    distinct = np.unique(kept["rate"].to_numpy())
    ranks = np.searchsorted(distinct, kept["rate"].to_numpy())
    return dict(zip(kept["value"].to_list(), ranks.tolist())), distinct


def _out_of_fold_codes(
    text: pl.Series,
    labels: np.ndarray,
    weights: np.ndarray,
    folds: np.ndarray,
    codes: dict[str, int],
    distinct_rates: np.ndarray,
) -> np.ndarray:
    """The codes the trees fit on, float64 [n]: each row of a coded value rated on the other folds'
    rows (a value they lack takes their overall rate), placed among the serving codes' rates
    (`_coding`); rows of rare or missing values NaN, as served. Target coding a value with its own
    rows' labels would let the trees, and the model over their leaves, memorize rare values."""
    out = np.full(len(text), np.nan)
    coded = text.is_in(list(codes)).fill_null(False).to_numpy()
    for fold in np.unique(folds):
        held, rest = (folds == fold) & coded, folds != fold
        table = _rates(text.filter(pl.Series(rest)), labels[rest], weights[rest])
        prior = float((labels[rest] > 0.5) @ weights[rest]) / max(float(weights[rest].sum()), 1e-12)
        rate = text.filter(pl.Series(held)).replace_strict(
            table["value"], table["rate"], default=prior, return_dtype=pl.Float64
        )
        out[held] = np.searchsorted(distinct_rates, rate.to_numpy(), side="left")
    return out
