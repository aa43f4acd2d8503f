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
 * G is laid out dimension-major, so the dots of one a against every b > a are summed side by side
 * (vectorized across b, each dot still summed in dimension order). V [num_ids, dim].
 *
 * Both return 0, or -1 when an id lies outside [0, num_ids) (nothing is read out of bounds).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

static int ids_inside(const int64_t *ids, int64_t count, int64_t num_ids) {
    uint64_t outside = 0;
    for (int64_t i = 0; i < count; ++i) outside |= (uint64_t)ids[i] >= (uint64_t)num_ids;
    return !outside;
}

CLONES int snn_online_sparse(const int64_t *ids, const double *values, int64_t n, int64_t fields,
                             const double *table, int64_t num_ids, int64_t width, const double *max_abs,
                             const double *id_bias, const double *bias, double *scaled, double *out) {
    if (!ids_inside(ids, n * fields, num_ids)) return -1;
    for (int64_t r = 0; r < n; ++r) {
        double *y = out + r * width;
        for (int64_t c = 0; c < width; ++c) y[c] = 0.0;
        for (int64_t f = 0; f < fields; ++f) {
            const int64_t e = r * fields + f, id = ids[e];
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
    double *g = malloc(sizeof(double) * (size_t)(vectors * dim)); /* G transposed: g[k * vectors + a] */
    if (!g) return -2;
    for (int64_t r = 0; r < n; ++r) {
        for (int64_t k = 0; k < dim; ++k) g[k * vectors] = g0[r * dim + k];
        for (int64_t f = 0; f < fields; ++f) {
            const double *v = table + ids[r * fields + f] * dim;
            const double s = scaled[r * fields + f];
            for (int64_t k = 0; k < dim; ++k) g[k * vectors + f + 1] = v[k] * s;
        }
        double *y = out + r * pairs;
        for (int64_t a = 0; a < vectors - 1; ++a) {
            const int64_t count = vectors - a - 1;
            double *dots = y;
            for (int64_t b = 0; b < count; ++b) dots[b] = 0.0;
            for (int64_t k = 0; k < dim; ++k) {
                const double ga = g[k * vectors + a];
                const double *gb = g + k * vectors + a + 1;
                for (int64_t b = 0; b < count; ++b) dots[b] += ga * gb[b];
            }
            y += count;
        }
    }
    free(g);
    return 0;
}
