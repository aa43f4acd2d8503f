/* The sparse linear layer's inference forward, fused: normalization, per-sample weights and the
 * row sum in one pass over a CSR batch (see pipeline/native.py and SparseLinear in model.py).
 *
 *   out[b, :] = Σ_{e in row b} W[id_e, :] · (v_e / max(max_abs[id_e], |v_e|, TINY) + id_bias[id_e]) + B
 *
 * ids int64 [nnz], values float32 [nnz], offsets int64 [rows] (row starts; row b ends where b + 1
 * starts, the last at nnz), weight float32 [num_ids, width], max_abs and id_bias float32 [num_ids],
 * bias float32 [width], out float32 [rows, width].
 *
 * One pass per row (per 64 columns): each entry's normalized weight s_e is computed and its table
 * row summed into vector registers, the max, bias and row of the entry AHEAD places on prefetched
 * (the tables are far larger than the cache), and the row's first AHEAD entries before the pass.
 * The column loop is specialized per block width (1-8 vectors, with or without a partial last
 * vector), so the sums never leave registers.
 *
 * Threads (OpenMP, `threads` of them): a batch of at least PARALLEL_ENTRIES entries is split by
 * rows. A batch of fewer rows than threads (a single request) has each row's entries split over
 * the threads instead (at least PART_ENTRIES each), the partial sums added after, so that more
 * cache misses are in flight (cold rows, a serving request's: the bench's B2). Other batches
 * run on the calling thread without entering OpenMP. The row kernel is compiled for x86-64-v4
 * (AVX-512), x86-64-v3 (AVX2 + FMA) and plain x86-64 and picked at load time (target_clones).
 *
 * Returns 0; -1 when an id lies outside [0, num_ids) or the offsets are not non-decreasing row
 * starts within [0, nnz] (nothing is read out of bounds, and the output is then undefined); -2 when
 * the partial sums cannot be allocated.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define TINY 1e-12f
#define AHEAD 32 /* entries: 16 left DRAM latency showing on cold rows, 48 and 64 were slower */
#define LANES 8
#define BLOCK_VECTORS 8 /* 64 columns per pass */
#define PARALLEL_ENTRIES 1024
#define PART_ENTRIES 64 /* the fewest entries of a split row one thread takes */

typedef float v8f __attribute__((vector_size(LANES * sizeof(float))));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 /* arch=x86-64-v3: gcc 11 */
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

static inline __attribute__((always_inline)) v8f load8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* An entry's normalized weight v / max(m, |v|, TINY) + b (the maxima by comparison: fmaxf is a libm call). */
static inline __attribute__((always_inline)) float normalized(float v, float m, float b) {
    const float magnitude = fabsf(v);
    float scale = m > magnitude ? m : magnitude;
    scale = scale > TINY ? scale : TINY;
    return v / scale + b;
}

/* Sums one block of columns [c, c + FULL * LANES (+ the tail)) of a row whose ids are known to be
 * inside the table. FULL and HAS_TAIL are constants where this is inlined, so every sum stays in a
 * register and the column loop unrolls. */
static inline __attribute__((always_inline)) void sum_block(const int64_t *ids, const float *values, int64_t n,
                                                          const float *weight, int64_t width, int64_t c,
                                                          int64_t cols, const float *max_abs,
                                                          const float *id_bias, const float *bias, float *y,
                                                          const int full, const int has_tail) {
    v8f acc[BLOCK_VECTORS], last = (v8f){0};
    for (int j = 0; j < full; ++j) acc[j] = (v8f){0};
    for (int64_t e = 0; e < n && e < AHEAD; ++e) {
        __builtin_prefetch(max_abs + ids[e]);
        __builtin_prefetch(id_bias + ids[e]);
        prefetch_bytes(weight + ids[e] * width + c, cols * (int64_t)sizeof(float));
    }
    for (int64_t e = 0; e < n; ++e) {
        if (e + AHEAD < n) {
            const int64_t ahead = ids[e + AHEAD];
            __builtin_prefetch(max_abs + ahead);
            __builtin_prefetch(id_bias + ahead);
            prefetch_bytes(weight + ahead * width + c, cols * (int64_t)sizeof(float));
        }
        const int64_t id = ids[e];
        const v8f sv = (v8f){0} + normalized(values[e], max_abs[id], id_bias[id]);
        const float *w = weight + id * width + c;
        for (int j = 0; j < full; ++j) acc[j] += sv * load8(w + j * LANES);
        if (has_tail) last += sv * load8(w + cols - LANES);
    }
    const int64_t tail = cols - full * LANES;
    for (int j = 0; j < full; ++j)
        for (int t = 0; t < LANES; ++t) y[c + j * LANES + t] = acc[j][t] + bias[c + j * LANES + t];
    for (int64_t t = 0; t < tail; ++t) y[c + full * LANES + t] = last[LANES - tail + t] + bias[c + full * LANES + t];
}

/* Blocks narrower than one vector. */
static void sum_narrow(const int64_t *ids, const float *values, int64_t n, const float *weight, int64_t width,
                       int64_t c, int64_t cols, const float *max_abs, const float *id_bias, const float *bias,
                       float *y) {
    float narrow[LANES] = {0};
    for (int64_t e = 0; e < n; ++e) {
        const int64_t id = ids[e];
        const float s = normalized(values[e], max_abs[id], id_bias[id]), *w = weight + id * width + c;
        for (int64_t t = 0; t < cols; ++t) narrow[t] += s * w[t];
    }
    for (int64_t t = 0; t < cols; ++t) y[c + t] = narrow[t] + bias[c + t];
}

#define BLOCK(FULL, HAS_TAIL)                                                                              \
    case 2 * FULL + HAS_TAIL:                                                                              \
        sum_block(ids, values, n, weight, width, c, cols, max_abs, id_bias, bias, y, FULL, HAS_TAIL);      \
        break;

CLONES static int pool_row(const int64_t *ids, const float *values, int64_t n, const float *weight,
                           int64_t num_ids, int64_t width, const float *max_abs, const float *id_bias,
                           const float *bias, float *y) {
    if (!ids_inside(ids, n, num_ids)) return -1;
    for (int64_t c = 0; c < width; c += LANES * BLOCK_VECTORS) {
        const int64_t cols = width - c < LANES * BLOCK_VECTORS ? width - c : LANES * BLOCK_VECTORS;
        const int64_t full = cols / LANES;
        switch (2 * full + (cols % LANES != 0)) {
            BLOCK(1, 0) BLOCK(1, 1) BLOCK(2, 0) BLOCK(2, 1) BLOCK(3, 0) BLOCK(3, 1) BLOCK(4, 0) BLOCK(4, 1)
            BLOCK(5, 0) BLOCK(5, 1) BLOCK(6, 0) BLOCK(6, 1) BLOCK(7, 0) BLOCK(7, 1) BLOCK(8, 0)
            default: sum_narrow(ids, values, n, weight, width, c, cols, max_abs, id_bias, bias, y);
        }
    }
    return 0;
}

/* Row b's entries [*start, *end); 0, or 1 when the offsets do not delimit a row within [0, nnz]. */
static inline int row_span(const int64_t *offsets, int64_t rows, int64_t nnz, int64_t b, int64_t *start,
                           int64_t *end) {
    *start = offsets[b];
    *end = b + 1 < rows ? offsets[b + 1] : nnz;
    return *start < 0 || *end < *start || *end > nnz;
}

/* Row b into out[b]; 0, or 1 on bad offsets or ids. */
static inline int pool_one(const int64_t *ids, const float *values, const int64_t *offsets, int64_t rows,
                           int64_t nnz, const float *weight, int64_t num_ids, int64_t width, const float *max_abs,
                           const float *id_bias, const float *bias, float *out, int64_t b) {
    int64_t start, end;
    return row_span(offsets, rows, nnz, b, &start, &end) ||
           pool_row(ids + start, values + start, end - start, weight, num_ids, width, max_abs, id_bias, bias,
                    out + b * width) != 0;
}

/* Whole rows, split over the threads; one thread runs outside OpenMP (entering it is not free). */
static int pool_batch(const int64_t *ids, const float *values, const int64_t *offsets, int64_t rows, int64_t nnz,
                      const float *weight, int64_t num_ids, int64_t width, const float *max_abs,
                      const float *id_bias, const float *bias, float *out, int threads) {
    int bad = 0;
    if (threads > 1) {
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : bad)
        for (int64_t b = 0; b < rows; ++b)
            bad |= pool_one(ids, values, offsets, rows, nnz, weight, num_ids, width, max_abs, id_bias, bias, out, b);
    } else {
        for (int64_t b = 0; b < rows; ++b)
            bad |= pool_one(ids, values, offsets, rows, nnz, weight, num_ids, width, max_abs, id_bias, bias, out, b);
    }
    return bad ? -1 : 0;
}

/* Each row's entries in `parts` slices, one per thread; part 0 carries the bias. */
static int pool_batch_split(const int64_t *ids, const float *values, const int64_t *offsets, int64_t rows,
                            int64_t nnz, const float *weight, int64_t num_ids, int64_t width,
                            const float *max_abs, const float *id_bias, const float *bias, float *out,
                            int64_t parts) {
    const int64_t units = rows * parts;
    float *partial = calloc((size_t)((units + 1) * width), sizeof(float)); /* [rows, parts, width], then zeros */
    if (!partial) return -2;
    const float *zeros = partial + units * width;
    int bad = 0;
#pragma omp parallel for schedule(static) num_threads((int)units) reduction(| : bad)
    for (int64_t u = 0; u < units; ++u) {
        const int64_t b = u / parts, p = u % parts;
        int64_t start, end;
        if (row_span(offsets, rows, nnz, b, &start, &end)) {
            bad = 1;
            continue;
        }
        const int64_t from = start + (end - start) * p / parts, to = start + (end - start) * (p + 1) / parts;
        bad |= pool_row(ids + from, values + from, to - from, weight, num_ids, width, max_abs, id_bias,
                        p == 0 ? bias : zeros, partial + u * width) != 0;
    }
    for (int64_t b = 0; b < rows; ++b)
        for (int64_t k = 0; k < width; ++k) {
            float sum = 0;
            for (int64_t p = 0; p < parts; ++p) sum += partial[(b * parts + p) * width + k];
            out[b * width + k] = sum;
        }
    free(partial);
    return bad ? -1 : 0;
}

int snn_sparse_linear_f32(const int64_t *ids, const float *values, const int64_t *offsets,
                          int64_t rows, int64_t nnz, const float *weight, int64_t num_ids, int64_t width,
                          const float *max_abs, const float *id_bias, const float *bias,
                          float *out, int threads) {
    if (rows > 0 && rows < threads) {
        const int64_t by_threads = threads / rows, by_entries = nnz / (rows * PART_ENTRIES);
        const int64_t parts = by_threads < by_entries ? by_threads : by_entries;
        if (parts > 1)
            return pool_batch_split(ids, values, offsets, rows, nnz, weight, num_ids, width, max_abs, id_bias, bias,
                                    out, parts);
    }
    return pool_batch(ids, values, offsets, rows, nnz, weight, num_ids, width, max_abs, id_bias, bias, out,
                      nnz >= PARALLEL_ENTRIES ? threads : 1);
}
