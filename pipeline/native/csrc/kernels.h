/* Helpers shared by the kernels of pipeline/csrc (each library includes its own copy; the native
 * loader hashes this header with the sources, so a change here rebuilds them). */
#ifndef SNN_KERNELS_H
#define SNN_KERNELS_H

#include <stdint.h>

/* 1 when every one of the count ids lies in [0, num_ids): one branch-free pass, checked before any
 * table row is read. */
static inline int ids_inside(const int64_t *ids, int64_t count, int64_t num_ids) {
    uint64_t outside = 0;
    for (int64_t i = 0; i < count; ++i) outside |= (uint64_t)ids[i] >= (uint64_t)num_ids;
    return !outside;
}

/* Every cache line of the `bytes` bytes at p on its way into the cache (table rows are scattered
 * over tables far larger than the cache). */
static inline __attribute__((always_inline)) void prefetch_bytes(const void *p, int64_t bytes) {
    const char *start = (const char *)p;
    for (int64_t k = 0; k < bytes; k += 64) __builtin_prefetch(start + k);
    __builtin_prefetch(start + bytes - 1);
}

#endif
