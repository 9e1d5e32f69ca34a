/*
 * gostack: stacks for coroutines, fibers and green threads, handed out the
 * way the Go runtime hands out goroutine stacks (runtime/stack.go).
 *
 * Sizes are rounded up to a power of two of at least GOSTACK_MIN_SIZE (Go's
 * round2). Stacks under 32 KiB come from per-thread caches of four orders
 * (2, 4, 8, 16 KiB) backed by global pools of 32 KiB spans; larger stacks get
 * a span each and are recycled through stackLarge.
 *
 * Thread safety: every function may be called from any thread at any time,
 * with no registration. A stack may be freed by any thread. A thread's caches
 * go back to the global pools when it exits or calls gostack_thread_flush().
 *
 * Errors, one model for every function:
 *   - a failure sets errno and is told by the return value: NULL for a
 *     pointer, {0, 0} for a stack, 0 for a size, nonzero for an int (-1, or
 *     for gostack_allocator_delete the errno value itself, as pthread
 *     functions do). Nothing changes on failure;
 *   - a success leaves errno alone;
 *   - misuse that would corrupt memory (freeing what is not a live stack of
 *     that allocator, a double free included, in every build) prints one
 *     line starting "gostack:" to stderr and aborts, like Go's throw.
 * Allocation fails with EINVAL for a size of 0 or above GOSTACK_MAX_SIZE
 * and ENOMEM when the OS refuses memory.
 *
 * ABI: libgostack.so.0 keeps every binary built against an earlier
 * gostack.h of the same SONAME working. Structs only grow at their end, and
 * a struct that grows gets new symbol versions for the functions that take
 * it (cmake/gostack.map): a binary built against an older header binds to
 * the older version, which reads and writes only the fields that header
 * had, so whatever lies after an old struct is never touched. A binary
 * built against a newer header than the library refuses to load (the
 * dynamic loader names the missing GOSTACK_x version). dlsym() finds the
 * newest version; dlvsym(h, name, "GOSTACK_0.2") pins one. Zero-initialize
 * config structs ({0} or designated initializers): zero is every field's
 * default.
 */
#ifndef GOSTACK_H
#define GOSTACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GOSTACK_VERSION_MAJOR 0
#define GOSTACK_VERSION_MINOR 2
#define GOSTACK_VERSION_PATCH 0
/* major << 16 | minor << 8 | patch: compare with gostack_version() */
#define GOSTACK_VERSION_NUMBER ((GOSTACK_VERSION_MAJOR << 16) | (GOSTACK_VERSION_MINOR << 8) | GOSTACK_VERSION_PATCH)

#if defined(__GNUC__) && defined(GOSTACK_BUILDING)
#define GOSTACK_API __attribute__((visibility("default")))
#else
#define GOSTACK_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Memory [lo, hi); a stack grows down from hi. {0, 0} means "no stack". */
typedef struct gostack { uintptr_t lo, hi; } gostack_t;

#define GOSTACK_MIN_SIZE   2048    /* Go's fixedStack: order 0 */
#define GOSTACK_NUM_ORDERS 4       /* Go's _NumStackOrders: 2, 4, 8, 16 KiB */
#define GOSTACK_CACHE_SIZE 32768   /* Go's _StackCacheSize: per-thread cap per order, and the pool span size */
#define GOSTACK_MAX_SIZE   ((size_t)1 << 30)

typedef enum gostack_backend {
	GOSTACK_BACKEND_DEFAULT = 0,   /* the process default: GOSTACK_BACKEND if set, else the lock-free pools
	                                  (so a library's own allocators follow the environment too) */
	GOSTACK_BACKEND_MUTEX,         /* Go's own pools: one padded mutex per order, one for stackLarge */
	GOSTACK_BACKEND_LOCKFREE       /* ConcurrencyKit stacks with RCU span reclamation */
} gostack_backend_t;

typedef struct gostack_config {
	gostack_backend_t backend;
	bool no_cache;                 /* Go's stackNoCache: every small alloc and free goes to the global pools */
	bool debug;                    /* debug checks (also GOSTACK_DEBUG=1 for every allocator): double frees
	                                  caught at the call, free stacks poisoned and checked on reuse,
	                                  invariant checks at flush and reclaim */
	size_t guard_size;             /* bytes of no-access memory directly below every stack's lo, rounded
	                                  up to pages (GOSTACK_GUARD for the default allocator); 0: none.
	                                  Installed once per slot with MADV_GUARD_INSTALL (Linux >= 6.13:
	                                  no extra mapping), else mprotect (one mapping per guard). A write
	                                  below lo faults (SIGSEGV). hi - lo stays the rounded size; a
	                                  guarded stack starts on a page of its own */
	int decay_ms;                  /* free memory idle this long goes back to the OS by itself (a
	                                  background thread); 0: 1000 (GOSTACK_DECAY_MS for the default
	                                  allocator); negative: never (only gostack_allocator_reclaim) */
	/* since 0.2 (GOSTACK_0.2) */
	const char *name;              /* shown by stats_print and stats_detail, copied (at most
	                                  GOSTACK_NAME_MAX bytes, else EINVAL); NULL: none */
	unsigned profile;              /* depth profile: one stack in this many (on average) has its
	                                  deepest use measured between handout and free; 0: off
	                                  (GOSTACK_PROFILE=N for every allocator that leaves it 0) */
	bool no_percpu;                /* lock-free pools without their per-CPU tier (also
	                                  GOSTACK_PERCPU=0 for every allocator) */
} gostack_config_t;

#define GOSTACK_NAME_MAX 31

typedef struct gostack_allocator gostack_allocator_t;

typedef struct gostack_stats {
	uint64_t allocs, frees;        /* successful allocations and frees */
	size_t inuse_bytes;            /* stacks handed out and not yet freed */
	size_t cached_bytes;           /* free stacks in per-thread caches */
	size_t pooled_bytes;           /* free stacks in the global pools: free stacks of pool spans, and stackLarge */
	size_t mapped_bytes;           /* span memory obtained from the OS and not yet returned (the stacks'
	                                  bytes: guards and guarded slots' padding are not counted) */
} gostack_stats_t;

/* One size class: an order (2, 4, 8, 16 KiB) or all large stacks. */
typedef struct gostack_class_stats {
	size_t size;                   /* stack size of the order; 0 for the large class */
	uint64_t allocs, frees;
	size_t inuse_bytes, cached_bytes, pooled_bytes;
} gostack_class_stats_t;

/* Depth profile classes: the four orders, then large stacks by size
 * (32 KiB, 64 KiB, ... 1 GiB); each class's histogram has
 * GOSTACK_PROFILE_BUCKETS buckets of size / GOSTACK_PROFILE_BUCKETS bytes
 * (bucket i: deepest use in (i, i + 1] * size / BUCKETS; bucket 0 also 0). */
#define GOSTACK_PROFILE_CLASSES 20
#define GOSTACK_PROFILE_BUCKETS 32

typedef struct gostack_depth_stats {
	size_t size;                   /* the class's stack size */
	uint64_t samples;              /* sampled stacks freed (measured) */
	size_t p50, p99;               /* deepest use, bytes: upper bounds of the buckets holding the
	                                  50th and 99th percentiles, at most max */
	size_t max;                    /* the deepest use measured */
	uint64_t hist[GOSTACK_PROFILE_BUCKETS];
} gostack_depth_stats_t;

typedef struct gostack_stats_detail {
	gostack_stats_t total;         /* what gostack_allocator_stats() gives */
	gostack_class_stats_t order[GOSTACK_NUM_ORDERS];
	gostack_class_stats_t large;   /* stacks of 32 KiB and more; pooled = stackLarge (and per-CPU bins) */
	size_t heap_dirty_bytes;       /* process-wide: freed spans' pages still committed, waiting for decay */
	gostack_backend_t backend;     /* GOSTACK_BACKEND_MUTEX or GOSTACK_BACKEND_LOCKFREE */
	bool no_cache;
	size_t guard_size;             /* page-rounded; 0: none */
	int decay_ms;                  /* effective: > 0, or -1 (never) */
	/* since 0.2 (GOSTACK_0.2) */
	const char *name;              /* config.name ("" if none); valid while the allocator lives */
	size_t heap_reserved_bytes;    /* process-wide: address space of gostack's arenas (its share of
	                                  /proc/self/maps; mapped_bytes of every allocator live in it) */
	uint64_t heap_released_bytes;  /* process-wide, since start: stack memory given back to the OS
	                                  (decay, reclaim and the heap's retain bound; madvise or munmap) */
	unsigned profile;              /* effective one-in-N sampling; 0: off */
	bool percpu;                   /* the lock-free per-CPU tier runs (rseq available, not off) */
	size_t percpu_bytes;           /* of pooled_bytes, the free stacks held in per-CPU bins */
	gostack_depth_stats_t depth[GOSTACK_PROFILE_CLASSES];   /* all 0 while off */
} gostack_stats_detail_t;

/* The library's version at run time (GOSTACK_VERSION_NUMBER of the
 * libgostack.so.0 actually loaded, which may be newer than the header a
 * program was built with). */
GOSTACK_API unsigned gostack_version(void);
/* The size of the stack gostack_allocator_alloc(a, size) hands out (hi - lo):
 * size rounded up to a power of two of at least GOSTACK_MIN_SIZE (Go's
 * round2), as malloc_good_size does for malloc; 0 for 0 or above
 * GOSTACK_MAX_SIZE (alloc fails with EINVAL there). For libraries that
 * remember only the size they asked for. */
GOSTACK_API size_t gostack_good_size(size_t size);

/* The process-wide default allocator, configured from the environment:
 * GOSTACK_NOCACHE, GOSTACK_BACKEND, GOSTACK_GUARD, GOSTACK_DECAY_MS,
 * GOSTACK_STATS (README: "Environment"). */
GOSTACK_API gostack_t gostack_alloc(size_t size);
GOSTACK_API void gostack_free(gostack_t stk);
GOSTACK_API gostack_allocator_t *gostack_default_allocator(void);

/* NULL cfg: defaults (all fields 0). NULL with errno EINVAL (bad config:
 * guard_size > GOSTACK_MAX_SIZE, a name longer than GOSTACK_NAME_MAX),
 * ENOSYS (backend not built) or ENOMEM. */
GOSTACK_API gostack_allocator_t *gostack_allocator_new(const gostack_config_t *cfg);
/* 0; or, with errno set to the same value and nothing changed: EBUSY while
 * any of its stacks is in use (a deferred free not yet done included),
 * EINVAL for NULL or the default allocator (never deleted). */
GOSTACK_API int gostack_allocator_delete(gostack_allocator_t *a);
GOSTACK_API gostack_t gostack_allocator_alloc(gostack_allocator_t *a, size_t size);
GOSTACK_API void gostack_allocator_free(gostack_allocator_t *a, gostack_t stk);
/* The calling thread's caches, of every allocator, back to the pools (and
 * its deferred frees done). */
GOSTACK_API void gostack_thread_flush(void);
/* Every free span and stackLarge span of a, and every freed page of the
 * process's stack heap still committed (whichever allocator freed it), back
 * to the OS. Returns the bytes of stack memory this call gave back (what
 * RSS can drop by), 0 if none; 0 with errno EINVAL for NULL. */
GOSTACK_API size_t gostack_allocator_reclaim(gostack_allocator_t *a);
/* Exact whenever no alloc or free of a is running; then inuse + cached + pooled == mapped. */
GOSTACK_API void gostack_allocator_stats(gostack_allocator_t *a, gostack_stats_t *out);
/* The same, per order and for large stacks, with the allocator's settings;
 * the classes' inuse, cached and pooled add up to the totals. */
GOSTACK_API void gostack_allocator_stats_detail(gostack_allocator_t *a, gostack_stats_detail_t *out);
/* Print a's statistics to file descriptor fd (2: stderr), each line starting
 * "gostack: ". GOSTACK_STATS=1 prints the default allocator's at exit.
 * 0, or -1 with errno (EINVAL: a is NULL; or write's error). */
GOSTACK_API int gostack_allocator_stats_print(gostack_allocator_t *a, int fd);

/* ---- since 0.2 (GOSTACK_0.2) ------------------------------------------ */

/* Free a live stack of a knowing only its lo (the size comes from gostack's
 * span metadata): for libraries that keep a pointer and not the size.
 * Misuse aborts as gostack_allocator_free's does. */
GOSTACK_API void gostack_allocator_free_lo(gostack_allocator_t *a, uintptr_t lo);
GOSTACK_API void gostack_free_lo(uintptr_t lo);   /* the default allocator's */
/* Free a stack the calling thread may be running on (a library's
 * coroutine-exit path freeing its own stack, as state-threads does): freed
 * at once if the thread is not running on it; else checked now (misuse
 * aborts here) and freed as soon as the thread has left it, at its next
 * gostack_*_free_deferred, gostack_thread_flush or gostack call that leaves
 * its cache, or at thread exit. A thread runs on one stack at a time, so at
 * most one stack waits per thread. Until freed it counts as in use. A
 * thread that exits while still running on it keeps it (in use). */
GOSTACK_API void gostack_allocator_free_deferred(gostack_allocator_t *a, gostack_t stk);
GOSTACK_API void gostack_free_deferred(gostack_t stk);

/* Callbacks in the shape of malloc-style hooks (minicoro's mco_desc
 * alloc_cb / dealloc_cb, and similar): allocator_data is a
 * gostack_allocator_t * or NULL for the default allocator. alloc returns
 * the stack's lo (hi = lo + gostack_good_size(size)), NULL with errno on
 * failure; the block is not zeroed. dealloc frees by lo (size unused). */
GOSTACK_API void *gostack_cb_alloc(size_t size, void *allocator_data);
GOSTACK_API void gostack_cb_dealloc(void *ptr, size_t size, void *allocator_data);

#ifdef __cplusplus
}
#endif

#endif /* GOSTACK_H */
