/* The online scorer's float64 kernels (see pipeline/online.py): one request of n candidates with
 * F features each, ids int64 [n, F] and values double [n, F], row-major.
 *
 * snn_online_sparse: the sparse linear layer without its activation,
 *   s[r, f] = v[r, f] / max(max_abs[id], |v[r, f]|, 1e-12)                    (written to `scaled`)
 *   out[r, :] = Σ_f W[id, :] · (s[r, f] + id_bias[id]) + B,   id = ids[r, f]
 * summed in feature order, as scipy's CSR product does. W [num_ids, width].
 *
 * snn_online_pairs: the DLRM dot interactions of each candidate,
 *   G = [g0[r], V[id_1] · s_1, ..., V[id_F] · s_F]   ([F + 1, dim]; s the scaled values above)
 *   out[r, :] = (G_a · G_b) for a < b in row-major order (numpy's triu_indices(F + 1, 1))
 * G is laid out dimension-major, so the dots of two a's against BLOCK b's at a time are summed side
 * by side in vector registers (each dot still summed in dimension order). V [num_ids, dim].
 *
 * Both return 0, or -1 when an id lies outside [0, num_ids) (nothing is read out of bounds).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define AHEAD 8   /* entries prefetched ahead */
#define BLOCK 16 /* dots summed side by side: 4 vectors of 4 doubles */

typedef double v4d __attribute__((vector_size(4 * sizeof(double))));

static inline __attribute__((always_inline)) v4d load4(const double *p) {
    v4d v;
    memcpy(&v, p, sizeof v);
    return v;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 /* arch=x86-64-v3: gcc 11 */
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* Table row `id` (and its max and bias, when given) on its way into the cache: the tables are far
 * larger than the cache and a request's rows are scattered. */
static inline void prefetch_row(const double *table, int64_t id, int64_t width, const double *max_abs,
                                const double *id_bias) {
    prefetch_bytes(table + id * width, width * (int64_t)sizeof(double));
    if (max_abs) __builtin_prefetch(max_abs + id);
    if (id_bias) __builtin_prefetch(id_bias + id);
}

CLONES int snn_online_sparse(const int64_t *ids, const double *values, int64_t n, int64_t fields,
                             const double *table, int64_t num_ids, int64_t width, const double *max_abs,
                             const double *id_bias, const double *bias, double *scaled, double *out) {
    if (!ids_inside(ids, n * fields, num_ids)) return -1;
    const int64_t entries = n * fields;
    for (int64_t r = 0; r < n; ++r) {
        double *y = out + r * width;
        for (int64_t c = 0; c < width; ++c) y[c] = 0.0;
        for (int64_t f = 0; f < fields; ++f) {
            const int64_t e = r * fields + f, id = ids[e];
            if (e + AHEAD < entries) prefetch_row(table, ids[e + AHEAD], width, max_abs, id_bias);
            const double v = values[e], magnitude = fabs(v);
            double scale = max_abs[id] > magnitude ? max_abs[id] : magnitude;
            scale = scale > 1e-12 ? scale : 1e-12;
            const double s = v / scale;
            scaled[e] = s;
            const double weight = s + id_bias[id];
            const double *w = table + id * width;
            for (int64_t c = 0; c < width; ++c) y[c] += weight * w[c];
        }
        for (int64_t c = 0; c < width; ++c) y[c] += bias[c];
    }
    return 0;
}

CLONES int snn_online_pairs(const double *g0, const double *table, int64_t num_ids, int64_t dim,
                            const int64_t *ids, const double *scaled, int64_t n, int64_t fields, double *out) {
    if (!ids_inside(ids, n * fields, num_ids)) return -1;
    const int64_t vectors = fields + 1, pairs = vectors * fields / 2;
    /* G transposed, g[k * stride + a], each row padded by a block of zeros so that a block of dots
     * may read past the last vector (its extra lanes are dropped) */
    const int64_t stride = vectors + BLOCK;
    double *g = calloc((size_t)(dim * stride), sizeof(double));
    if (!g) return -2;
    for (int64_t r = 0; r < n; ++r) {
        for (int64_t k = 0; k < dim; ++k) g[k * stride] = g0[r * dim + k];
        for (int64_t f = 0; f < fields; ++f) {
            if (r + 1 < n) prefetch_row(table, ids[(r + 1) * fields + f], dim, NULL, NULL); /* the next candidate's */
            const double *v = table + ids[r * fields + f] * dim;
            const double s = scaled[r * fields + f];
            for (int64_t k = 0; k < dim; ++k) g[k * stride + f + 1] = v[k] * s;
        }
        double *y = out + r * pairs;
        for (int64_t a = 0; a < vectors - 1; a += 2) { /* rows a and a + 1 of the triangle together */
            double *ya = y, *yb = y + (vectors - a - 1); /* row a + 1 starts where row a ends */
            for (int64_t b0 = a + 1; b0 < vectors; b0 += BLOCK) { /* dots with b0 .. b0 + BLOCK - 1 */
                v4d acc_a[BLOCK / 4], acc_b[BLOCK / 4];
                for (int j = 0; j < BLOCK / 4; ++j) acc_a[j] = acc_b[j] = (v4d){0};
                for (int64_t k = 0; k < dim; ++k) {
                    const double *gk = g + k * stride;
                    const v4d ga = (v4d){0} + gk[a], gb = (v4d){0} + gk[a + 1];
                    for (int j = 0; j < BLOCK / 4; ++j) {
                        const v4d other = load4(gk + b0 + 4 * j);
                        acc_a[j] += ga * other;
                        acc_b[j] += gb * other;
                    }
                }
                const int64_t count = vectors - b0 < BLOCK ? vectors - b0 : BLOCK;
                for (int64_t t = 0; t < count; ++t) *ya++ = acc_a[t / 4][t % 4];
                for (int64_t t = b0 == a + 1; t < count; ++t) *yb++ = acc_b[t / 4][t % 4]; /* b > a + 1 */
            }
            y = yb > ya ? yb : ya;
        }
    }
    free(g);
    return 0;
}
