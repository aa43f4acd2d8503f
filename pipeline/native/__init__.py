"""The one seam between snn and its C kernels: every kernel sits here beside its reference
implementation (numpy, polars or torch) behind one function, and a caller cannot tell which ran but
by speed. `SNN_NATIVE=0` turns every kernel off. Tests hold each kernel equal to its reference.

    records_to_numbers      an online request's dicts -> numbers                (records.c | Python)
    sparse_sums, dot_pairs  the online scorer's float64 sparse layer and pairs  (online.c | numpy)
    sparse_sums_rows        the same sparse layer over ragged rows (id lists)   (numpy only)
    sparse_linear_f32       the sparse linear layer's float32 inference          (sparse_linear.c | torch;
                            in native.sparse_linear, which imports torch)
    Totals, IntegerLookup,  exact per-value totals, integer vocabulary lookups,  (hash_table.c | polars,
    bin_ids, bin_column     percentile bins                                       numpy)
"""

from .loader import enabled, forget_libraries
from .records import SEEN_BIG, SEEN_BOOL, SEEN_FLOAT, SEEN_INT, SEEN_NONE, SEEN_OTHER, records_to_numbers
from .scoring import dot_pairs, sparse_sums, sparse_sums_rows
from .tables import IntegerLookup, Totals, bin_column, bin_ids, fits_int64

__all__ = [
    "SEEN_BIG",
    "SEEN_BOOL",
    "SEEN_FLOAT",
    "SEEN_INT",
    "SEEN_NONE",
    "SEEN_OTHER",
    "IntegerLookup",
    "Totals",
    "bin_column",
    "bin_ids",
    "dot_pairs",
    "enabled",
    "fits_int64",
    "forget_libraries",
    "records_to_numbers",
    "sparse_sums",
    "sparse_sums_rows",
]
