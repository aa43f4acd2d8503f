"""Criteo-shaped synthetic data with a planted model, so every row's true probability is known.

Columns: `label` (0/1), `I1..I13` continuous counts (log-normal, skewed, with missing values),
`C1..C26` categorical ids (Zipf-distributed ranks hashed to 31-bit ints, cardinalities spaced
evenly in log from 10 to 10^6, some with missing values), and `p_true` (the probability the label
was drawn with). Written to parquet one row group at a time: memory holds one group, whatever
the row count.

The planted model (all parameters drawn from `seed`):

    logit = b0 + Σ_j f_j(I_j) + Σ_k w_k[C_k] + Σ_(a,b) γ · u_a(row) · u_b(row)
    f_j(x) = α_j · tanh((log1p(x) − μ_j) / σ_j), or ε_j when I_j is missing
    w_k[r] ~ N(0, 0.6²) · (1 + r)^-RARE_DECAY per id rank r (rarer ids matter less)
    u(row) = a N(0, 1) factor per id of a categorical, tanh(z-score of log1p(x)) for a continuous

so a model needs the pairwise products (INTERACTIONS) to reach the oracle. With `lists`, two id-list
columns join (drawn after the others, so the rest of a row is the same as without them):

    L1  recent items: a parquet list of int ids, Zipf over 20,000 items, length Poisson(6) capped
        at 30 (some empty); logit += 1.5 · mean over the list of v[item] (0 when empty)
    L2  tags: text such as "t12|t7", 300 tags, 0-6 per row; logit += Σ over the list of t[tag]
    L3  cart: a parquet list of items of L1's item space (the same ids), length Poisson(3) capped at
        15; logit += 1.0 · mean over the list of v[item], L1's item effects (a table shared by L1
        and L3 learns v from both)
    v[r] ~ N(0, 0.8²) · (1 + r)^-0.2,  t[r] ~ N(0, 0.3²)

With `weighted`, one sparse-continuous column joins (drawn after the lists, before the position):

    W   weighted tags: text such as "w12:0.73|w7:1.9" (tag:weight, weights U(0.5, 2) with two
        decimals), 200 tags, 0-8 per row; logit += Σ over the list of weight · s[tag], s[r] ~ N(0, 0.3²)

With `positions`, each row was shown in a slot `position` 1..10 (uniform) that lowers its odds:
logit += −0.25 · (position − 1); `p_top` is the row's probability had it been shown in slot 1 (the
oracle of a model served at position 1; p_true stays the probability the label was drawn with).
With `tasks`, two events per row (a click and, given a click, a conversion; drawn last): `click`
takes the label's place (P(click) = p_click, the planted model above, positive_rate 5% by default),
and

    conversion logit = c0 + 0.6 · (logit − b0) + Σ_(k in CONVERT_FEATURES) q_k[C_k] + 0.4 · z(I5)
    P(convert | click) = σ(conversion logit),   q_k[r] ~ N(0, 0.5²)

with c0 solved so that about 10% of clicks convert; `convert` is 0 on every row without a click,
`p_convert_given_click` and `p_convert` = p_click · P(convert | click) are the oracles.
b0 is solved so the positive rate is about `positive_rate`. Rows are drawn per row group from the generator
`(seed, group)`, so any group can be regenerated alone and the output is deterministic.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
from polars.io.plugins import register_io_source

from ..errors import InputError
from .rows import splitmix64

CONTINUOUS = [f"I{j}" for j in range(1, 14)]
LISTS = {
    "L1": {"items": 20_000, "mean_length": 6, "cap": 30},
    "L2": {"items": 300, "max_length": 6},
    "L3": {"mean_length": 3, "cap": 15},  # items of L1's space
}
WEIGHTED_COLUMN, WEIGHTED_TAGS, WEIGHTED_PER_ROW = "W", 200, 8  # weighted tags: the column, tags, most per row
TAG_SEPARATOR = "|"
CATEGORICAL = [f"C{k}" for k in range(1, 27)]
ORACLE_COLUMN = "p_true"
INTERACTIONS = (("C1", "C2"), ("C3", "C5"), ("C4", "I1"), ("C6", "C8"), ("I2", "I3"), ("C7", "C10"))
POSITION_SLOTS, POSITION_EFFECT, TOP_ORACLE = 10, -0.25, "p_top"
CONVERT_FEATURES, CONVERT_RATE = ("C3", "C9", "C14"), 0.10  # the conversion's own effects; its rate per click
TASK_COLUMNS = ("click", "convert", "p_click", "p_convert_given_click", "p_convert")
ZIPF_EXPONENT = 1.15
TEST_FRACTION = 0.1  # synth_spec's test split: the file's last 10% of rows
RARE_DECAY = 0.3  # per-id effects shrink as (1 + rank)^-0.3: rare ids carry less signal, as hashed tails do


def cardinalities() -> dict[str, int]:
    """C1..C26: 10 ... 10^6, evenly spaced in log."""
    return {name: round(10 ** (1 + 5 * k / 25)) for k, name in enumerate(CATEGORICAL)}


def zipf_ranks(rng: np.random.Generator, cardinality: int, n: int) -> np.ndarray:
    """Ranks in [0, cardinality) with P(r) ∝ (r + 1)^-s (inverse CDF of the continuous power law): int64 [n]."""
    s, u = ZIPF_EXPONENT, rng.random(n)
    top = (cardinality + 1.0) ** (1 - s)
    x = (1 + u * (top - 1)) ** (1 / (1 - s))
    return np.minimum(x.astype(np.int64) - 1, cardinality - 1)


@dataclass(frozen=True)
class SynthConfig:
    rows: int
    seed: int = 0
    row_group: int = 262_144
    positive_rate: float = 0.25
    interaction_strength: float = 0.35
    lists: bool = False
    positions: bool = False
    weighted: bool = False
    tasks: bool = False


class PlantedModel:
    """The true model's parameters (drawn once from the seed) and the per-group row generator."""

    def __init__(self, config: SynthConfig):
        self.config = config
        rng = np.random.default_rng([config.seed, 1 << 40])
        self.cards = cardinalities()
        self.cont = {
            name: {
                "mu": rng.uniform(0.5, 5.0),
                "sigma": rng.uniform(0.5, 2.0),
                "missing": rng.uniform(0.0, 0.45),
                "alpha": rng.normal(0, 0.45),
                "eps": rng.normal(0, 0.3),
            }
            for name in CONTINUOUS
        }
        self.cat_missing = {name: (0.0, 0.05, 0.3)[k % 3] for k, name in enumerate(CATEGORICAL)}
        self.effects = {
            name: rng.normal(0, 0.6, card) * (1.0 + np.arange(card)) ** -RARE_DECAY for name, card in self.cards.items()
        }
        self.factors = {
            name: rng.normal(0, 1, self.cards[name]) for pair in INTERACTIONS for name in pair if name in self.cards
        }
        if config.lists:
            self.list_effects = {
                "L1": rng.normal(0, 0.8, LISTS["L1"]["items"]) * (1.0 + np.arange(LISTS["L1"]["items"])) ** -0.2,
                "L2": rng.normal(0, 0.3, LISTS["L2"]["items"]),
            }
        if config.weighted:
            self.weighted_effects = rng.normal(0, 0.3, WEIGHTED_TAGS)
        if config.tasks:
            self.convert_effects = {name: rng.normal(0, 0.5, self.cards[name]) for name in CONVERT_FEATURES}
        self.b0 = 0.0
        self.b0 = self._solve_bias()
        self.c0 = self._solve_conversion_bias() if config.tasks else 0.0

    def _solve_bias(self) -> float:
        """b0 such that the mean true probability of a 200k-row draw is positive_rate (bisection)."""
        logits = self._draw(np.random.default_rng([self.config.seed, 1 << 41]), 200_000)[1]
        lo, hi = -10.0, 10.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.mean(_sigmoid(logits + mid)) < self.config.positive_rate else (lo, mid)
        return (lo + hi) / 2

    def _solve_conversion_bias(self) -> float:
        """c0 such that about CONVERT_RATE of a 200k-row draw's expected clicks convert (bisection)."""
        columns, logits = self._draw(np.random.default_rng([self.config.seed, 1 << 41]), 200_000)
        clicks, shift = _sigmoid(logits), columns["conversion_logit"].to_numpy()
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            rate = np.sum(clicks * _sigmoid(shift + mid)) / np.sum(clicks)
            lo, hi = (mid, hi) if rate < CONVERT_RATE else (lo, mid)
        return (lo + hi) / 2

    def _draw(self, rng: np.random.Generator, n: int) -> tuple[dict, np.ndarray]:
        """n rows: raw columns (with None masks) and their logits [n]."""
        columns, logit, factor, drawn = {}, np.full(n, self.b0), {}, {}
        for name, p in self.cont.items():
            z = rng.normal(p["mu"], p["sigma"], n)
            x = np.floor(np.expm1(np.maximum(z, 0.0)))
            missing = rng.random(n) < p["missing"]
            standard = np.tanh((np.log1p(x) - p["mu"]) / p["sigma"])
            logit += np.where(missing, p["eps"], p["alpha"] * standard)
            factor[name] = np.where(missing, 0.0, standard)
            columns[name] = _with_nulls(name, x, missing)
        for k, name in enumerate(CATEGORICAL):
            ranks = zipf_ranks(rng, self.cards[name], n)
            missing = rng.random(n) < self.cat_missing[name]
            logit += np.where(missing, 0.0, self.effects[name][ranks])
            drawn[name] = (ranks, missing)
            if name in self.factors:
                factor[name] = np.where(missing, 0.0, self.factors[name][ranks])
            hashed = (splitmix64(ranks, seed=k) >> np.uint64(33)).astype(np.int64)
            columns[name] = _with_nulls(name, hashed, missing)
        for a, b in INTERACTIONS:
            logit += self.config.interaction_strength * factor[a] * factor[b]
        if self.config.lists:
            self._draw_lists(rng, n, columns, logit)
        if self.config.weighted:
            self._draw_weighted(rng, n, columns, logit)
        if self.config.tasks:  # the conversion's logit without c0 (its own effects read the drawn columns)
            shift = 0.6 * (logit - self.b0) + 0.4 * factor["I5"]
            for name in CONVERT_FEATURES:
                ranks, missing = drawn[name]
                shift += np.where(missing, 0.0, self.convert_effects[name][ranks])
            columns["conversion_logit"] = pl.Series("conversion_logit", shift)
        if self.config.positions:  # drawn last: the rest of a row is the same as without positions
            position = rng.integers(1, POSITION_SLOTS + 1, n)
            columns[TOP_ORACLE] = pl.Series(TOP_ORACLE, _sigmoid(logit))
            columns["position"] = pl.Series("position", position)
            logit += POSITION_EFFECT * (position - 1)
        return columns, logit

    def _draw_lists(self, rng: np.random.Generator, n: int, columns: dict, logit: np.ndarray) -> None:
        """The id-list columns L1 (list of ints) and L2 (text), and their effects added to `logit` [n]."""
        spec = LISTS["L1"]
        lengths = np.minimum(rng.poisson(spec["mean_length"], n), spec["cap"])
        ranks = zipf_ranks(rng, spec["items"], int(lengths.sum()))
        rows = np.repeat(np.arange(n), lengths)
        sums = np.bincount(rows, self.list_effects["L1"][ranks], minlength=n)
        logit += 1.5 * sums / np.maximum(lengths, 1)
        ids = (splitmix64(ranks, seed=101) >> np.uint64(40)).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        columns["L1"] = pl.Series("L1", [ids[a:b] for a, b in itertools.pairwise(offsets)], dtype=pl.List(pl.Int64))
        tags_per_row = rng.integers(0, LISTS["L2"]["max_length"] + 1, n)
        tags = rng.integers(0, LISTS["L2"]["items"], int(tags_per_row.sum()))
        logit += np.bincount(np.repeat(np.arange(n), tags_per_row), self.list_effects["L2"][tags], minlength=n)
        starts = np.concatenate([[0], np.cumsum(tags_per_row)])
        columns["L2"] = pl.Series(
            "L2", [TAG_SEPARATOR.join(f"t{t}" for t in tags[a:b]) for a, b in itertools.pairwise(starts)]
        )
        cart = LISTS["L3"]
        lengths = np.minimum(rng.poisson(cart["mean_length"], n), cart["cap"])
        ranks = zipf_ranks(rng, spec["items"], int(lengths.sum()))
        sums = np.bincount(np.repeat(np.arange(n), lengths), self.list_effects["L1"][ranks], minlength=n)
        logit += 1.0 * sums / np.maximum(lengths, 1)
        ids = (splitmix64(ranks, seed=101) >> np.uint64(40)).astype(np.int64)  # L1's ids for the same items
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        columns["L3"] = pl.Series("L3", [ids[a:b] for a, b in itertools.pairwise(offsets)], dtype=pl.List(pl.Int64))

    def _draw_weighted(self, rng: np.random.Generator, n: int, columns: dict, logit: np.ndarray) -> None:
        """The weighted-tag column W (text "w<tag>:<weight>|..."), its effect added to `logit` [n]."""
        per_row = rng.integers(0, WEIGHTED_PER_ROW + 1, n)
        tags = rng.integers(0, WEIGHTED_TAGS, int(per_row.sum()))
        weights = np.round(rng.uniform(0.5, 2.0, len(tags)), 2)
        logit += np.bincount(np.repeat(np.arange(n), per_row), weights * self.weighted_effects[tags], minlength=n)
        starts = np.concatenate([[0], np.cumsum(per_row)])
        columns[WEIGHTED_COLUMN] = pl.Series(
            WEIGHTED_COLUMN,
            [
                TAG_SEPARATOR.join(f"w{t}:{w:g}" for t, w in zip(tags[a:b], weights[a:b], strict=True))
                for a, b in itertools.pairwise(starts)
            ],
        )

    def group(self, index: int) -> pl.DataFrame:
        """Row group `index` (rows [index·row_group, ...)), deterministic in (seed, index)."""
        start = index * self.config.row_group
        n = min(self.config.row_group, self.config.rows - start)
        rng = np.random.default_rng([self.config.seed, index])
        columns, logit = self._draw(rng, n)
        p = _sigmoid(logit)
        label = (rng.random(n) < p).astype(np.int8)
        positions = ["position", TOP_ORACLE] if self.config.positions else []
        features = [columns[c] for c in CONTINUOUS + CATEGORICAL + self.list_columns + positions[:1]]
        if self.config.tasks:  # drawn after the click: the rest of the file is the same as without tasks
            given = _sigmoid(columns["conversion_logit"].to_numpy() + self.c0)
            convert = (label == 1) & (rng.random(n) < given)
            return pl.DataFrame(
                [
                    pl.Series("click", label),
                    pl.Series("convert", convert.astype(np.int8)),
                    *features,
                    pl.Series("p_click", p),
                    pl.Series("p_convert_given_click", given),
                    pl.Series("p_convert", p * given),
                    *(columns[c] for c in positions[1:]),
                ]
            )
        return pl.DataFrame(
            [
                pl.Series("label", label),
                *features,
                pl.Series(ORACLE_COLUMN, p),
                *(columns[c] for c in positions[1:]),
            ]
        )

    @property
    def list_columns(self) -> list[str]:
        return [*(LISTS if self.config.lists else []), *([WEIGHTED_COLUMN] if self.config.weighted else [])]

    @property
    def groups(self) -> int:
        return -(-self.config.rows // self.config.row_group)


def _with_nulls(name: str, values: np.ndarray, missing: np.ndarray) -> pl.Series:
    """A Series of `values` with null where `missing`."""
    frame = pl.DataFrame({name: values, "missing": missing})
    return frame.select(pl.when(pl.col("missing")).then(None).otherwise(pl.col(name)).alias(name)).to_series()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def schema(lists: bool = False, positions: bool = False, weighted: bool = False, tasks: bool = False) -> dict:
    labels = {"click": pl.Int8, "convert": pl.Int8} if tasks else {"label": pl.Int8}
    oracles = dict.fromkeys(TASK_COLUMNS[2:], pl.Float64) if tasks else {ORACLE_COLUMN: pl.Float64}
    return {
        **labels,
        **dict.fromkeys(CONTINUOUS, pl.Float64),
        **dict.fromkeys(CATEGORICAL, pl.Int64),
        **({"L1": pl.List(pl.Int64), "L2": pl.String, "L3": pl.List(pl.Int64)} if lists else {}),
        **({WEIGHTED_COLUMN: pl.String} if weighted else {}),
        **({"position": pl.Int64} if positions else {}),
        **oracles,
        **({TOP_ORACLE: pl.Float64} if positions else {}),
    }


def write(path: Path, config: SynthConfig) -> dict:
    """Stream `config.rows` rows to parquet at `path`, one row group at a time; returns a summary."""
    if config.rows < 1 or config.row_group < 1:
        raise InputError("--rows and --row-group must be at least 1")
    model = PlantedModel(config)
    stats = {"rows": 0, "positives": 0, "p_sum": 0.0, "conversions": 0}
    label, oracle = ("click", "p_click") if config.tasks else ("label", ORACLE_COLUMN)

    def source(with_columns, predicate, n_rows, batch_size):
        for index in range(model.groups):
            frame = model.group(index)
            stats["rows"] += frame.height
            stats["positives"] += int(frame[label].sum())
            stats["p_sum"] += float(frame[oracle].sum())
            stats["conversions"] += int(frame["convert"].sum()) if config.tasks else 0
            yield frame if with_columns is None else frame.select(with_columns)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    register_io_source(
        source, schema=schema(config.lists, config.positions, config.weighted, config.tasks)
    ).sink_parquet(tmp, row_group_size=config.row_group)
    tmp.replace(path)
    summary = {
        "path": str(path),
        **asdict(config),
        "label_rate": stats["positives"] / max(stats["rows"], 1),
        "mean_p_true": stats["p_sum"] / max(stats["rows"], 1),
        **({"conversions_per_click": stats["conversions"] / max(stats["positives"], 1)} if config.tasks else {}),
        "interactions": [list(p) for p in INTERACTIONS],
        "cardinalities": cardinalities(),
    }
    path.with_name(path.name + ".json").write_text(json.dumps(summary, indent=2))
    return summary


def train_rows(rows: int) -> int:
    """The synthetic specs' train/test cut: rows [0, cut) train (with the holdout), [cut, rows) test."""
    return int(rows * (1 - TEST_FRACTION))


def synth_spec(data_path: str, rows: int, name: str = "synth", width: int = 64, batch_size: int = 1024) -> dict:
    """A spec for a synthetic file: train rows [0, train_rows(n)) with a 5% key-hash holdout, the
    rest as test, every column as its feature, `p_true` as the oracle, and DLRM dot interactions
    (dim 16) so the planted pairwise products can be learned; one epoch at lr 0.01."""
    cut = train_rows(rows)
    features: list[dict] = [
        {"name": c, "kind": "continuous", "discretizer": {"kind": "percentile", "bins": 32}} for c in CONTINUOUS
    ]
    features += [{"name": c, "kind": "categorical", "min_count": 2} for c in CATEGORICAL]
    return {
        "version": 1,
        "name": name,
        "data": {
            "format": "parquet",
            "train": {"path": data_path, "rows": [0, cut]},
            "test": {"path": data_path, "rows": [cut, rows]},
            "holdout": {"fraction": 0.05, "seed": 5},
            "label": {"column": "label"},
            "oracle": ORACLE_COLUMN,
        },
        "features": features,
        "model": {
            "sparse_linear": {"width": width, "activation": "relu"},
            "mlp": {"layers": [32]},
            "interactions": {"dim": 16},
        },
        "train": {"optimizer": "adam", "lr": 0.01, "batch_size": batch_size, "epochs": 1, "seed": 1},
    }
