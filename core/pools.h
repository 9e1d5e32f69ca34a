/*
 * pools.h: the one interface between the engine (core/) and a pool backend,
 * Go's stackpool[order] and stackLarge. Two peers implement it:
 *   core/mutex/   Go's mutex pools (the baseline)
 *   lockfree/     ConcurrencyKit stacks, urcu-bp grace periods
 * and core/pools.c lists them (gostack__backends); the engine reaches a
 * backend only through this table and an allocator's `ops`.
 *
 * What a backend may call in the engine: gostack__span_alloc / _free
 * (span.c: the only functions that change an allocator's mapped),
 * gostack__span_of, the heap-independent helpers of span.h and sizeclass.h,
 * gostack__meta_alloc / _free, gostack__throw / _warn, gostack__now_ms. It
 * never reads or writes allocator fields other than through those, except
 * the read-only settings decay_ms and debug (read, never written).
 *
 * Small stacks move as arrays of their gclinks' addresses (span.h: the
 * link in the stack's top 16 bytes, marked free), the form the per-thread
 * caches keep them in; a backend may link them through their gclinks while
 * it holds them. Large stacks move as spans.
 *
 * Lock order (outermost first), for every backend:
 *   gostack__decay_lock -> a backend's process-wide locks (urcu's, taken in
 *   its fork hooks) -> gostack__registry_lock -> a pool's own locks (order
 *   locks, stackLarge lock, sweep locks) -> the heap lock -> meta lock ->
 *   the scavenger's kick lock (fork only).
 * A pool never calls into the engine with one of its locks held except
 * gostack__span_alloc / _free (which take the heap lock) and the meta
 * allocator; it never starts a thread or waits for another thread under
 * one. What a backend may do across a grace period is in its own header
 * (lockfree/lockfree.h).
 */
#ifndef GOSTACK_POOLS_H
#define GOSTACK_POOLS_H

#include "internal.h"

/* pools_ops.release(p, GOSTACK__RELEASE_ALL, ...): reclaim. */
#define GOSTACK__RELEASE_ALL UINT64_MAX

struct gostack__pools_ops {
	gostack_backend_t kind;   /* GOSTACK_BACKEND_MUTEX or _LOCKFREE */

	/* ---- one instance per allocator ---- */
	/* A backend instance for allocator a; NULL with errno set. */
	void *(*create)(gostack_allocator_t *a);
	/* Return every span to the heap; no stack of the allocator is in use or
	 * cached (throws otherwise). */
	void (*destroy)(void *p);
	/* Go's stackpoolalloc loop (stackcacherefill, or n = 1 for stackNoCache):
	 * up to n (at most GOSTACK__CACHE_SLOTS(0)) free stacks of this order,
	 * their links into out[0..got); returns got (0 means ENOMEM, with errno
	 * set). */
	size_t (*pool_get)(void *p, int order, size_t n, struct gostack__gclink **out);
	/* Go's stackpoolfree loop (stackcacherelease, stackcache_clear,
	 * stackNoCache): the links in[0..n) of free stacks of this order, n >= 1
	 * (their `next` words are the backend's from here on). */
	void (*pool_put)(void *p, int order, struct gostack__gclink *const *in, size_t n);
	/* stackLarge: a kept span for a stack of exactly 2^log2npages pages,
	 * or NULL. */
	struct gostack__span *(*large_get)(void *p, unsigned log2npages);
	/* stackLarge: keep the freed large span (at most GOSTACK__LARGE_KEEP
	 * bytes per allocator) or give it back to the heap. */
	void (*large_put)(void *p, struct gostack__span *s);
	/* Bytes of free stacks in the pools (small and large, retiring
	 * included); sum: the allocator's counters, with every pool transfer
	 * the engine made. per_class (may be NULL): the same per order, then
	 * stackLarge's. */
	size_t (*pooled_bytes)(void *p, const struct gostack__tstat *sum,
	    size_t per_class[GOSTACK_NUM_ORDERS + 1]);
	/* Whether a per-CPU tier runs; if so *bytes: the pooled bytes in it
	 * (may be NULL: the backend has none). */
	bool (*percpu_bytes)(void *p, size_t *bytes);
	/* Give idle memory back to the heap; returns the bytes. stackLarge:
	 * spans idle since before `now` (stamped decay_at = now + decay_ms by
	 * the first call that sees them). sweep: pool spans whose stacks are
	 * all free (the lock-free pools: free at the previous sweep too; the
	 * mutex pools free them the moment they empty). now ==
	 * GOSTACK__RELEASE_ALL is reclaim: every fully free span and all of
	 * stackLarge, back in the heap when it returns. Called with
	 * gostack__decay_lock held and no other gostack lock. */
	size_t (*release)(void *p, uint64_t now, bool sweep);
	/* Debug mode: check the pools' invariants (may be NULL). */
	void (*check)(void *p);
	/* The instance's locks, in fork_prepare's order (after the registry
	 * lock, before the heap lock); fork_parent gives them back, in the
	 * parent and in the child. May be NULL. */
	void (*fork_prepare)(void *p);
	void (*fork_parent)(void *p);

	/* ---- process-wide, once per backend (may be NULL) ---- */
	/* Before fork takes any gostack lock but the decay lock; after it
	 * released them all, in the parent and in the child. */
	void (*global_fork_prepare)(void);
	void (*global_fork_parent)(void);
	void (*global_fork_child)(void);
	/* Deferral: return once no thread can still read memory or span
	 * metadata it reached through this backend's pools before the call
	 * (lock-free: a grace period). The engine calls it after detaching
	 * empty arenas and before unmapping them; called with the decay lock
	 * held and no other gostack lock. */
	void (*global_quiesce)(void);
};

GOSTACK__HIDDEN extern const struct gostack__pools_ops gostack__mutex_pools;
#ifdef GOSTACK_HAVE_LOCKFREE
GOSTACK__HIDDEN extern const struct gostack__pools_ops gostack__lockfree_pools;
#endif

/* ---- pools.c: the table of backends and what runs over all of them ---- */

/* Every backend built into the library, NULL-terminated. */
GOSTACK__HIDDEN extern const struct gostack__pools_ops *const gostack__backends[];
/* The backend of kind b (GOSTACK_BACKEND_DEFAULT: the process default); NULL
 * with errno ENOSYS (not built) or EINVAL (no such kind). */
GOSTACK__HIDDEN const struct gostack__pools_ops *gostack__backend_of(gostack_backend_t b);
GOSTACK__HIDDEN void gostack__backends_fork_prepare(void);
GOSTACK__HIDDEN void gostack__backends_fork_parent(void);
GOSTACK__HIDDEN void gostack__backends_fork_child(void);
GOSTACK__HIDDEN void gostack__backends_quiesce(void);
/* Detach the heap's empty arenas, wait until no backend can read them,
 * unmap them; decay lock held. (What went back is counted by the heap:
 * gostack__heap_released_here.) */
GOSTACK__HIDDEN void gostack__release_arenas(void);

#endif /* GOSTACK_POOLS_H */
