/*
 * The global pools: Go's stackpool[order] and stackLarge, behind one small
 * interface with two implementations:
 *   core/stackpool.c + core/stacklarge.c   Go's mutex pools (the baseline)
 *   lockfree/                              ConcurrencyKit stacks + liburcu
 * core/ calls only these functions; a backend calls back into core/ only
 * through gostack__span_alloc/free/of (mheap.c).
 *
 * Stacks move as lists linked through their first word (struct gostack__gclink),
 * the same links the per-thread caches use.
 */
#ifndef GOSTACK_POOLS_H
#define GOSTACK_POOLS_H

#include "internal.h"

struct gostack__pools_ops {
	const char *name;
	/* A backend instance for allocator a; NULL with errno set. */
	void *(*create)(gostack_allocator_t *a);
	/* Return every span to the heap; no stack of the allocator is in use or cached. */
	void (*destroy)(void *p);
	/* Go's stackpoolalloc loop (stackcacherefill, or n = 1 for stackNoCache):
	 * up to n stacks of this order linked into *list; returns how many
	 * (0 means ENOMEM, with errno set). */
	size_t (*pool_get)(void *p, int order, size_t n, struct gostack__gclink **list);
	/* Go's stackpoolfree loop (stackcacherelease, stackcache_clear, stackNoCache):
	 * n stacks of this order linked through their first word, NULL-terminated. */
	void (*pool_put)(void *p, int order, struct gostack__gclink *list, size_t n);
	/* stackLarge: a cached span of exactly 2^log2npages pages, or NULL. */
	struct gostack__span *(*large_get)(void *p, unsigned log2npages);
	/* stackLarge: keep the freed large span or give it back to the OS. */
	void (*large_put)(void *p, struct gostack__span *s);
	/* Bytes of free stacks in the pools (small and large); sum: the
	 * allocator's counters, with every pool transfer core made. per_class
	 * (may be NULL): the same per order, then stackLarge's. */
	size_t (*pooled_bytes)(void *p, const struct gostack__tstat *sum, size_t per_class[GOSTACK_NUM_ORDERS + 1]);
	/* Fully free spans and all of stackLarge back to the OS; bytes released.
	 * When it returns, the memory is back (pending deferred releases done). */
	size_t (*reclaim)(void *p);
	/* Process-wide hooks run before any lock of core/ is taken (prepare) and
	 * after all are released (parent, child); may be NULL. */
	void (*global_fork_prepare)(void);
	void (*global_fork_parent)(void);
	void (*global_fork_child)(void);
	/* Run outside every gostack lock before core takes the registry lock on
	 * a path that calls pool_put (flush, thread exit, delete), so that the
	 * backend never has to register the thread (urcu-bp) under a lock that
	 * fork_prepare also takes; may be NULL. */
	void (*global_thread_prepare)(void);
	/* The scavenger's pass (decay_lock and registry lock held): spans idle
	 * in stackLarge since before `now` (decay_at) go back; when `sweep`,
	 * free pool spans that stayed free since the previous sweeping pass go
	 * back too. Returns the bytes given back. */
	size_t (*decay)(void *p, uint64_t now, bool sweep);
	/* Debug mode: check the pools' invariants (may be NULL). */
	void (*check)(void *p);
	/* Per-instance locks, taken after the registry lock, before the heap
	 * lock; fork_parent gives them back in the parent and in the child. */
	void (*fork_prepare)(void *p);
	void (*fork_parent)(void *p);
};

GOSTACK__HIDDEN extern const struct gostack__pools_ops gostack__mutex_pools;
/* NULL when the library was built without the lock-free backend. */
GOSTACK__HIDDEN extern const struct gostack__pools_ops *const gostack__lockfree_pools;

/* How many bytes stackLarge keeps per allocator before frees go to the OS. */
#define GOSTACK__LARGE_KEEP ((size_t)64 << 20)

#endif /* GOSTACK_POOLS_H */
