/* Open-addressing hash tables of int64 keys with a double payload, and percentile binning: the
 * encoders' per-value work (see pipeline/hash_table.py and features.py).
 *
 * A table is three caller-owned arrays of `capacity` slots (a power of two, at least 2): keys
 * int64, payload double, used uint8 (0: empty). Keys are hashed by Fibonacci hashing and probed
 * linearly. Input keys are int64, or float64 read by their bits (`is_float`): NaN is missing and
 * -0.0 is read as 0.0, so equal numbers share one key.
 *
 * An input row is also missing where `missing` (bytes, one per row) is set, or where its bit of
 * `valid` is clear: an Arrow validity bitmap (least significant bit first) whose row 0 is bit
 * `valid_bit`, so a polars column's buffers are read in place (see pipeline/columns.py). Either
 * may be NULL.
 *
 *   snn_table_add:  payload[key] += weight (1 without weights) for each present input key
 *   snn_table_find: out[i] = payload[key_i] (default_id when absent, missing_id when missing) + offset
 *   snn_bin:        out[i] = bin_ids[#{edges <= x_i}] (missing_bin for NaN or missing) + offset
 *
 * Outputs are int64 or int32 (`out_is_32`): the caller's id buffer, written in place.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Fibonacci hashing: the top `bits` bits of key * 2^64/φ (every key bit reaches them, so float keys,
 * whose low bits are mostly zero, spread too). */
static inline uint64_t slot_of(int64_t key, int bits) {
    return ((uint64_t)key * 0x9E3779B97F4A7C15ULL) >> (64 - bits);
}

static inline int is_missing(const uint8_t *missing, const uint8_t *valid, int64_t valid_bit, int64_t i) {
    if (missing && missing[i]) return 1;
    if (!valid) return 0;
    const int64_t bit = valid_bit + i;
    return !((valid[bit >> 3] >> (bit & 7)) & 1);
}

/* Key i of the input: 1 and *key set, or 0 when it is missing (NaN, or flagged). */
static inline int read_key(const void *data, int is_float, const uint8_t *missing, const uint8_t *valid,
                           int64_t valid_bit, int64_t i, int64_t *key) {
    if (is_missing(missing, valid, valid_bit, i)) return 0;
    if (!is_float) {
        *key = ((const int64_t *)data)[i];
        return 1;
    }
    double x = ((const double *)data)[i];
    if (x != x) return 0;
    if (x == 0.0) x = 0.0; /* -0.0 -> 0.0 */
    memcpy(key, &x, sizeof x);
    return 1;
}

static inline void write_id(void *out, int out_is_32, int64_t i, int64_t id) {
    if (out_is_32)
        ((int32_t *)out)[i] = (int32_t)id;
    else
        ((int64_t *)out)[i] = id;
}

/* Adds inputs start.. into the table until all are in (returns n) or the table holds `limit` keys
 * (returns the index of the first input not added; the caller grows the table and goes on from it).
 * *count is the number of keys held. */
int64_t snn_table_add(int64_t *keys, double *payload, uint8_t *used, int64_t capacity, int64_t *count,
                      int64_t limit, const void *data, int is_float, const uint8_t *missing,
                      const uint8_t *valid, int64_t valid_bit, const double *weights, int64_t start, int64_t n) {
    const uint64_t mask = (uint64_t)capacity - 1;
    const int bits = __builtin_ctzll((uint64_t)capacity);
    int64_t held = *count;
    for (int64_t i = start; i < n; ++i) {
        int64_t key;
        if (!read_key(data, is_float, missing, valid, valid_bit, i, &key)) continue;
        uint64_t slot = slot_of(key, bits);
        while (used[slot] && keys[slot] != key) slot = (slot + 1) & mask;
        if (!used[slot]) {
            if (held >= limit) {
                *count = held;
                return i;
            }
            used[slot] = 1;
            keys[slot] = key;
            payload[slot] = 0.0;
            ++held;
        }
        payload[slot] += weights ? weights[i] : 1.0;
    }
    *count = held;
    return n;
}

void snn_table_find(const int64_t *keys, const double *payload, const uint8_t *used, int64_t capacity,
                    const void *data, int is_float, const uint8_t *missing, const uint8_t *valid,
                    int64_t valid_bit, int64_t n, int64_t default_id,
                    int64_t missing_id, int64_t offset, void *out, int out_is_32) {
    const uint64_t mask = (uint64_t)capacity - 1;
    const int bits = __builtin_ctzll((uint64_t)capacity);
    for (int64_t i = 0; i < n; ++i) {
        int64_t key, id = missing_id;
        if (read_key(data, is_float, missing, valid, valid_bit, i, &key)) {
            uint64_t slot = slot_of(key, bits);
            while (used[slot] && keys[slot] != key) slot = (slot + 1) & mask;
            id = used[slot] ? (int64_t)payload[slot] : default_id;
        }
        write_id(out, out_is_32, i, id + offset);
    }
}

/* Returns the number of infinite inputs (the caller rejects them; their ids are the outer bins). */
int64_t snn_bin(const double *x, const uint8_t *valid, int64_t valid_bit, int64_t n, const double *edges,
                int64_t n_edges, const int64_t *bin_ids, int64_t missing_bin, int64_t offset, void *out,
                int out_is_32) {
    int64_t infinite = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double v = x[i];
        int64_t bin = missing_bin;
        if (v == v && !is_missing(NULL, valid, valid_bit, i)) {
            /* the number of edges <= v (searchsorted, side right): a branchless binary search, its
             * step count fixed by n_edges, so nothing is mispredicted and values overlap */
            const double *base = edges;
            int64_t span = n_edges;
            while (span > 1) {
                const int64_t half = span >> 1;
                base = base[half] <= v ? base + half : base;
                span -= half;
            }
            bin = n_edges ? (base - edges) + (*base <= v) : 0;
            infinite += isinf(v) != 0;
        }
        write_id(out, out_is_32, i, (bin_ids ? bin_ids[bin] : bin) + offset);
    }
    return infinite;
}
