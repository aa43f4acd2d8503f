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
 * Rows are split over `threads` OpenMP threads when the batch has at least PARALLEL_ENTRIES
 * entries. The row kernel is compiled for AVX-512, AVX2 and plain x86-64 and picked at load time
 * (target_clones).
 *
 * Returns 0, or -1 when an id lies outside [0, num_ids) or the offsets are not non-decreasing row
 * starts within [0, nnz]; nothing is read out of bounds, and the output is then undefined.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define TINY 1e-12f
#define AHEAD 32 /* entries: 16 left DRAM latency showing on cold rows, 48 and 64 were slower */
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

/* One CSR row of n entries into y[0:width]; returns 0, or -1 on an id outside [0, num_ids).
 * Columns go BLOCK_VECTORS vectors at a time (one block for width <= 64); within a block each entry's
 * s_e is computed as it is summed, so every sum stays in a register. Columns past the block's last
 * full vector are summed by one more vector ending at the block's last column (it overlaps the
 * previous one; only its new lanes are kept). */
CLONES static int pool_row(const int64_t *ids, const float *values, int64_t n, const float *weight,
                           int64_t num_ids, int64_t width, const float *max_abs, const float *id_bias,
                           const float *bias, float *y) {
    uint64_t outside = 0;
    for (int64_t e = 0; e < n; ++e) outside |= (uint64_t)ids[e] >= (uint64_t)num_ids;
    if (outside) return -1;
    for (int64_t c = 0; c < width; c += LANES * BLOCK_VECTORS) {
        const int64_t cols = width - c < LANES * BLOCK_VECTORS ? width - c : LANES * BLOCK_VECTORS;
        const int64_t full = cols / LANES, tail = cols - full * LANES;
        v8f acc[BLOCK_VECTORS], last = (v8f){0};
        float narrow[LANES] = {0}; /* blocks narrower than one vector */
        for (int j = 0; j < BLOCK_VECTORS; ++j) acc[j] = (v8f){0};
        for (int64_t e = 0; e < n && e < AHEAD; ++e) { /* the row's first entries: in flight before the sums */
            __builtin_prefetch(max_abs + ids[e]);
            __builtin_prefetch(id_bias + ids[e]);
            prefetch_span(weight + ids[e] * width + c, cols);
        }
        for (int64_t e = 0; e < n; ++e) {
            if (e + AHEAD < n) {
                const int64_t ahead = ids[e + AHEAD];
                __builtin_prefetch(max_abs + ahead);
                __builtin_prefetch(id_bias + ahead);
                prefetch_span(weight + ahead * width + c, cols);
            }
            const int64_t id = ids[e];
            const float v = values[e], magnitude = fabsf(v), m = max_abs[id];
            float scale = m > magnitude ? m : magnitude; /* not fmaxf: a libm call */
            scale = scale > TINY ? scale : TINY;
            const float s = v / scale + id_bias[id];
            const float *w = weight + id * width + c;
            if (full == 0) {
                for (int64_t t = 0; t < tail; ++t) narrow[t] += s * w[t];
                continue;
            }
            const v8f sv = (v8f){0} + s;
            for (int j = 0; j < BLOCK_VECTORS; ++j)
                if (j < full) acc[j] += sv * load8(w + j * LANES);
            if (tail) last += sv * load8(w + cols - LANES);
        }
        for (int64_t j = 0; j < full; ++j)
            for (int t = 0; t < LANES; ++t) y[c + j * LANES + t] = acc[j][t] + bias[c + j * LANES + t];
        for (int64_t t = 0; t < tail; ++t)
            y[c + full * LANES + t] = (full ? last[LANES - tail + t] : narrow[t]) + bias[c + full * LANES + t];
    }
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
