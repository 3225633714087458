// Shared memory for the supervisor and its worker processes (doc/compartments.md): a
// memfd mapped MAP_SHARED, and 64-bit atomics on words in it. Functions return -errno.
// The atomics are inline so a counter in the packet path costs one locked instruction.
#ifndef SLUICE_ARENA_H
#define SLUICE_ARENA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A close-on-exec memfd of `size` bytes (zeroed), sealed against shrinking. Returns the fd or -errno.
int sluice_arena_create(const char *name, size_t size);

/// Maps `size` bytes of `fd` shared, read and write. Returns the address, or NULL with *err = errno.
/// Fails with EINVAL when the file is smaller than `size` (a worker handed the wrong fd).
void *sluice_arena_map(int fd, size_t size, int *err);

/// Unmaps what sluice_arena_map returned.
void sluice_arena_unmap(void *p, size_t size);

/// Makes `fd` survive exec (a worker inherits it) or not. Returns 0 or -errno.
int sluice_fd_set_inherit(int fd, int inherit);

/// 64-bit atomics on an 8-byte-aligned word, between threads and processes alike.
/// Sequentially consistent, except the `_relaxed` ones (counters that order nothing).
static inline uint64_t sluice_atomic_fetch_add_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline void sluice_atomic_add_relaxed_u64(uint64_t *p, uint64_t v) { (void)__atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline uint64_t sluice_atomic_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline uint64_t sluice_atomic_load_relaxed_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void sluice_atomic_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline void sluice_atomic_store_relaxed_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
/// Stores `desired` if *p is `expected`; returns 1 then, else 0 and the current value in *expected.
static inline int sluice_atomic_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

#ifdef __cplusplus
}
#endif
#endif
