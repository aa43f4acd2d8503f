/* The sparse linear layer's inference forward, fused: normalization, per-sample weights and the
 * row sum in one pass over a CSR batch (see pipeline/native.py and SparseLinear in model.py).
 *
 *   out[b, :] = Σ_{e in row b} W[id_e, :] · (v_e / max(max_abs[id_e], |v_e|, TINY) + id_bias[id_e]) + B
 *
 * ids int64 [nnz], values float32 [nnz], offsets int64 [rows] (row starts; row b ends where b + 1
 * starts, the last at nnz), weight float32 [num_ids, width], max_abs and id_bias float32 [num_ids],
 * bias float32 [width], out float32 [rows, width].
 *
 * A row is done CHUNK entries at a time: first each entry's normalized weight s_e, with its max,
 * bias and table row prefetched AHEAD entries early (the tables are far larger than the cache),
 * then Σ s_e · W[id_e] over 64 columns at a time held in vector registers, from rows now cached. Rows are split over `threads` OpenMP threads when the batch has at least
 * PARALLEL_ENTRIES entries. The row kernel is compiled for AVX-512, AVX2 and plain x86-64 and
 * picked at load time (target_clones).
 *
 * Returns 0, or -1 when an id lies outside [0, num_ids) or the offsets are not non-decreasing row
 * starts within [0, nnz]; nothing is read out of bounds, and the output is then undefined.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define TINY 1e-12f
#define AHEAD 16
#define CHUNK 256
#define LANES 8
#define BLOCK_VECTORS 8 /* 64 columns per pass */
#define PARALLEL_ENTRIES 1024

typedef float v8f __attribute__((vector_size(LANES * sizeof(float))));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

static inline __attribute__((always_inline)) v8f load8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) void prefetch_span(const float *p, int64_t count) {
    for (int64_t k = 0; k < count; k += 16) __builtin_prefetch(p + k);
    __builtin_prefetch(p + count - 1);
}

/* y[0:width] += Σ_e s[e] · weight[ids[e], 0:width] over n entries whose ids are all valid. Columns
 * past the last full vector are summed by one more vector ending at the block's last column (it
 * overlaps the previous one; only its new lanes are kept), so every sum stays in a register. */
static inline __attribute__((always_inline)) void add_rows(const int64_t *ids, const float *s, int64_t n,
                                                          const float *weight, int64_t width, float *y) {
    for (int64_t c = 0; c < width; c += LANES * BLOCK_VECTORS) {
        const int64_t cols = width - c < LANES * BLOCK_VECTORS ? width - c : LANES * BLOCK_VECTORS;
        const int64_t full = cols / LANES, tail = cols - full * LANES;
        if (full == 0) { /* fewer than LANES columns in all */
            for (int64_t e = 0; e < n; ++e)
                for (int64_t t = 0; t < tail; ++t) y[c + t] += s[e] * weight[ids[e] * width + c + t];
            continue;
        }
        v8f acc[BLOCK_VECTORS], last = (v8f){0};
        for (int j = 0; j < BLOCK_VECTORS; ++j) acc[j] = (v8f){0};
        for (int64_t e = 0; e < n; ++e) {
            const float *w = weight + ids[e] * width + c;
            const v8f se = (v8f){0} + s[e];
            for (int j = 0; j < BLOCK_VECTORS; ++j)
                if (j < full) acc[j] += se * load8(w + j * LANES);
            if (tail) last += se * load8(w + cols - LANES);
        }
        for (int64_t j = 0; j < full; ++j)
            for (int t = 0; t < LANES; ++t) y[c + j * LANES + t] += acc[j][t];
        for (int64_t t = 0; t < tail; ++t) y[c + full * LANES + t] += last[LANES - tail + t];
    }
}

/* One CSR row into y[0:width]; returns 0, or -1 on an id outside [0, num_ids). */
CLONES static int pool_row(const int64_t *ids, const float *values, int64_t n, const float *weight,
                           int64_t num_ids, int64_t width, const float *max_abs, const float *id_bias,
                           const float *bias, float *y) {
    float s[CHUNK];
    memset(y, 0, (size_t)width * sizeof(float));
    for (int64_t first = 0; first < n; first += CHUNK) {
        const int64_t count = n - first < CHUNK ? n - first : CHUNK;
        const int64_t *chunk = ids + first;
        for (int64_t e = 0; e < count; ++e) {
            if (e + AHEAD < count && (uint64_t)chunk[e + AHEAD] < (uint64_t)num_ids) {
                __builtin_prefetch(max_abs + chunk[e + AHEAD]);
                __builtin_prefetch(id_bias + chunk[e + AHEAD]);
                prefetch_span(weight + chunk[e + AHEAD] * width, width);
            }
            const int64_t id = chunk[e];
            if ((uint64_t)id >= (uint64_t)num_ids) return -1;
            const float v = values[first + e], magnitude = fabsf(v);
            float scale = max_abs[id] > magnitude ? max_abs[id] : magnitude; /* not fmaxf: a libm call */
            scale = scale > TINY ? scale : TINY;
            s[e] = v / scale + id_bias[id];
        }
        add_rows(chunk, s, count, weight, width, y);
    }
    for (int64_t k = 0; k < width; ++k) y[k] += bias[k];
    return 0;
}

int snn_sparse_linear_f32(const int64_t *ids, const float *values, const int64_t *offsets,
                          int64_t rows, int64_t nnz, const float *weight, int64_t num_ids, int64_t width,
                          const float *max_abs, const float *id_bias, const float *bias,
                          float *out, int threads) {
    int bad = 0;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && nnz >= PARALLEL_ENTRIES) \
    reduction(| : bad)
    for (int64_t b = 0; b < rows; ++b) {
        const int64_t start = offsets[b], end = b + 1 < rows ? offsets[b + 1] : nnz;
        if (start < 0 || end < start || end > nnz)
            bad = 1;
        else if (pool_row(ids + start, values + start, end - start, weight, num_ids, width, max_abs, id_bias,
                          bias, out + b * width) != 0)
            bad = 1;
    }
    return bad ? -1 : 0;
}
