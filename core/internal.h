/*
 * gostack internal API: constants, Go's size arithmetic, and the cross-file
 * names of core/ (all `gostack__`, hidden from the shared library's ABI).
 *
 * Files of core/ and the Go concept each one carries:
 *   sizeclass.h    round2, stack orders, stacklog2 (stack.go arithmetic)
 *   span.h         struct gostack__span (Go's mspan, stack fields only)
 *   mheap.c        arenas, the buddy page heap, spanOf (mheap.go)
 *   os.c           mmap/madvise/munmap, the only OS calls
 *   meta.c         small fixed-size metadata blocks (allocators, caches)
 *   stackcache.c   per-thread caches: stackcacherefill, stackcacherelease,
 *                  stackcache_clear, thread exit (mcache.stackcache)
 *   stack.c        stackalloc / stackfree and the misuse checks of free
 *   allocator.c    allocators, the default allocator, reclaim, fork
 *   stats.c        statistics: totals, per order and large, printing
 *   scavenger.c    the background scavenger: idle memory back after decay_ms
 *   tools.h        what AddressSanitizer and Valgrind are told about stacks
 *   pools.h        the interface of the global pools (two implementations)
 *   stackpool.c    Go's mutex stackpool[order] (stackpoolalloc/free)
 *   stacklarge.c   Go's mutex stackLarge
 */
#ifndef GOSTACK_INTERNAL_H
#define GOSTACK_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gostack.h"
#include "sizeclass.h"
#include "span.h"

#define GOSTACK__HIDDEN __attribute__((visibility("hidden")))
#define gostack__likely(x)   __builtin_expect(!!(x), 1)
#define gostack__unlikely(x) __builtin_expect(!!(x), 0)
#define GOSTACK__CACHELINE 64
/* Two lines: adjacent-line prefetch on x86 pairs lines, as liburcu assumes. */
#define GOSTACK__PAD 128

/* ---- os.c -------------------------------------------------------------- */

/* Reserve size bytes aligned to align (both powers of two), readable and
 * writable, committed lazily. NULL with errno ENOMEM on failure. */
GOSTACK__HIDDEN void *gostack__os_reserve(size_t size, size_t align);
GOSTACK__HIDDEN void gostack__os_unmap(void *p, size_t size);
/* Give the pages back (RSS falls); the range stays mapped and reads zero. */
GOSTACK__HIDDEN void gostack__os_decommit(void *p, size_t size);
/* Give the pages back and make the range inaccessible (a "hole", PROT_NONE,
 * still reserved); false if the kernel refused. */
GOSTACK__HIDDEN bool gostack__os_punch(void *p, size_t size);
/* Map a hole back (MAP_FIXED); false with errno on failure. */
GOSTACK__HIDDEN bool gostack__os_refill(void *p, size_t size);
/*
 * Stack memory is MADV_NOHUGEPAGE unless GOSTACK_THP=1: with transparent
 * huge pages "always", touching one 2 KiB stack of an arena would commit a
 * 2 MiB page (thousands of idle coroutines would cost GiBs), khugepaged
 * would collapse free stacks back into RSS after decay gave them back, and
 * a 4 KiB MADV_DONTNEED or guard would split huge pages. Applied to whole
 * arenas, and to holes mapped back, so that mappings keep merging.
 */
GOSTACK__HIDDEN void gostack__os_nohugepage(void *p, size_t size);
/* The OS page size (guards are rounded to it). */
GOSTACK__HIDDEN size_t gostack__os_page(void);
/* Make [p, p + size) a guard: any access faults. MADV_GUARD_INSTALL (no new
 * mapping) where the kernel has it, else mprotect(PROT_NONE) (splits the
 * mapping). false with errno ENOMEM on failure (a warning names
 * vm.max_map_count when mprotect ran out of mappings). */
GOSTACK__HIDDEN bool gostack__os_guard(void *p, size_t size);
/* Remove every guard in [p, p + size) (one call for a whole span). */
GOSTACK__HIDDEN void gostack__os_unguard(void *p, size_t size);
/* How guards are made: 0 not decided yet, 1 MADV_GUARD_INSTALL, 2 mprotect. */
GOSTACK__HIDDEN extern _Atomic int gostack__os_guard_mode;
/* One line "gostack: ..." on stderr, then abort(): Go's throw. */
GOSTACK__HIDDEN _Noreturn void gostack__throw(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
GOSTACK__HIDDEN void gostack__warn(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* ---- meta.c ------------------------------------------------------------ */

/* Zeroed blocks for allocators and thread caches; never from malloc, so a
 * malloc replacement in the host never carries gostack's own state. */
GOSTACK__HIDDEN void *gostack__meta_alloc(size_t size);
GOSTACK__HIDDEN void gostack__meta_free(void *p, size_t size);
GOSTACK__HIDDEN void gostack__meta_fork_prepare(void);
GOSTACK__HIDDEN void gostack__meta_fork_parent(void);

/* ---- mheap.c ----------------------------------------------------------- */

/* How a span's memory goes back when it is freed to the heap. */
enum gostack__release {
	GOSTACK__RELEASE_DECOMMIT,   /* back to the heap dirty; madvise(MADV_DONTNEED) by the
	                                heap's scavenger (past GOSTACK__HEAP_RETAIN, or reclaim) */
	GOSTACK__RELEASE_UNMAP,      /* PROT_NONE hole, mapped back on reuse: only after
	                                no thread can still read it (lockfree/: after a grace period) */
	GOSTACK__RELEASE_IDLE        /* as DECOMMIT, but the span was idle for its decay time
	                                already: the scavenger's next pass gives it back */
};

/* Go's allocManual: a span for allocator a, in state `state` (SPAN_POOL or
 * SPAN_LARGE) holding stacks of elemsize bytes laid out by gostack__geom,
 * guards installed. Counts its stack bytes in a's mapped_bytes. NULL with
 * errno ENOMEM. */
GOSTACK__HIDDEN struct gostack__span *gostack__span_alloc(gostack_allocator_t *a,
    uint8_t state, size_t elemsize);
/* Go's freeManual: the span goes back to the heap and its memory to the OS.
 * a == NULL: the caller already took the bytes off its allocator's mapped. */
GOSTACK__HIDDEN void gostack__span_free(gostack_allocator_t *a, struct gostack__span *s,
    enum gostack__release how);
/* Go's spanOf: the span head whose memory starts at the 32 KiB unit holding
 * addr, or NULL when addr is not in an arena. Reads only the arena table and
 * the arena's out-of-line span array, never the stack. Callers check state. */
GOSTACK__HIDDEN struct gostack__span *gostack__span_of(uintptr_t addr);
/* Freed span memory the heap keeps committed, process-wide, before it
 * scavenges (Go's heap keeps freed pages until its scavenger runs). */
#define GOSTACK__HEAP_RETAIN ((size_t)16 << 20)
/* Every dirty free block back to the OS (madvise); returns the bytes. */
GOSTACK__HIDDEN size_t gostack__heap_scavenge(void);
/* Dirty free blocks whose decay deadline is <= now back to the OS; *next:
 * the earliest deadline left (UINT64_MAX: none). Returns the bytes. */
GOSTACK__HIDDEN size_t gostack__heap_decay(uint64_t now, uint64_t *next);
/* Bytes of dirty free blocks. */
GOSTACK__HIDDEN size_t gostack__heap_dirty(void);
/* Unmap arenas that hold no span; returns bytes unmapped. */
GOSTACK__HIDDEN size_t gostack__heap_release_empty(void);
GOSTACK__HIDDEN void gostack__heap_fork_prepare(void);
GOSTACK__HIDDEN void gostack__heap_fork_parent(void);

/* ---- stackcache.c ------------------------------------------------------ */

/* Counters a thread keeps for one allocator. Only the owning thread writes
 * them, with a relaxed load and store (a plain mov on x86, no RMW); stats()
 * reads them with relaxed loads from any thread. The allocator's `dead` and
 * `orphan` copies are updated with relaxed fetch_add by any thread. */
struct gostack__tstat {
	_Atomic uint64_t allocs[GOSTACK_NUM_ORDERS];   /* small stacks, per order */
	_Atomic uint64_t frees[GOSTACK_NUM_ORDERS];
	_Atomic uint64_t large_allocs, large_frees;
	_Atomic uint64_t large_alloc_bytes, large_free_bytes;
	/* small stacks moved from / to the global pools (refill, release,
	 * clear, stackNoCache): lets a backend know its free stacks without a
	 * shared counter on its hot path */
	_Atomic uint64_t pool_out[GOSTACK_NUM_ORDERS], pool_in[GOSTACK_NUM_ORDERS];
};

/* Go's stackfreelist: a LIFO of free stacks linked through their first word. */
struct gostack__stackfreelist {
	struct gostack__gclink *list;
	_Atomic size_t size;       /* bytes in list; written by the owner only */
};

/*
 * A thread's cache for one allocator (Go's per-P mcache.stackcache).
 * Invariants:
 *  - stackcache[o] is touched only by the owning thread, except by
 *    gostack_allocator_delete() and by a fork child adopting the caches of
 *    threads that did not survive fork, both under the registry lock and
 *    when the owner cannot be using the allocator.
 *  - stackcache[o].size == count(list) * (GOSTACK_MIN_SIZE << o) <= GOSTACK_CACHE_SIZE.
 *  - id == alloc->id while linked on alloc->tcaches; id == 0 once orphaned
 *    (allocator deleted); the struct then stays with the thread's slot and is
 *    reused by the next allocator given that slot.
 */
struct gostack__tcache {
	_Atomic uint64_t id;
	gostack_allocator_t *alloc;
	struct gostack__stackfreelist stackcache[GOSTACK_NUM_ORDERS];
	struct gostack__tstat st;
	struct gostack__tcache *next, *prev;   /* alloc->tcaches, registry lock */
	struct gostack__tls *owner;
};

/* At most this many allocators have per-thread caches at once; others run
 * every operation on the global pools (Go's "no P"). */
#define GOSTACK__SLOTS 32

enum { GOSTACK__TLS_FRESH = 0, GOSTACK__TLS_LIVE, GOSTACK__TLS_EXITING };

/* Per-thread state, initial-exec TLS: no __tls_get_addr on the fast path.
 * slot[GOSTACK__SLOTS] is always NULL: the slot of cacheless allocators. */
struct gostack__tls {
	struct gostack__tcache *slot[GOSTACK__SLOTS + 1];
	int state;
};
extern __thread struct gostack__tls gostack__tls
    __attribute__((tls_model("initial-exec"))) GOSTACK__HIDDEN;

/* Registry lock: the allocator list, slots, every allocator's tcache list and
 * tcache ids. Lock order: registry -> pools (order locks, stackLarge) -> heap -> meta. */
extern pthread_mutex_t gostack__registry_lock GOSTACK__HIDDEN;

/* The calling thread's cache for a, created on first use; NULL when a has no
 * slot, the thread is exiting, or memory ran out (then: no cache). */
GOSTACK__HIDDEN struct gostack__tcache *gostack__tcache_slow(gostack_allocator_t *a);
GOSTACK__HIDDEN bool gostack__stackcacherefill(struct gostack__tcache *t, int order);
GOSTACK__HIDDEN void gostack__stackcacherelease(struct gostack__tcache *t, int order);
GOSTACK__HIDDEN void gostack__stackcache_clear(struct gostack__tcache *t);
/* Flush t, fold its counters into its allocator and unlink it (registry lock held). */
GOSTACK__HIDDEN void gostack__tcache_retire(struct gostack__tcache *t);
GOSTACK__HIDDEN void gostack__tstat_add(struct gostack__tstat *dst, const struct gostack__tstat *src);
GOSTACK__HIDDEN void gostack__tls_key_init(void);
/* Fork child: adopt the caches of threads that did not survive fork. */
GOSTACK__HIDDEN void gostack__tcache_fork_child(void);

static inline void
gostack__count(_Atomic uint64_t *c, uint64_t d)
{
	/* Single writer: a relaxed load and store, not an RMW. */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
	    memory_order_relaxed);
}

/* ---- debug.c ----------------------------------------------------------- */

/* Called on the slow paths of allocators with debug set. */
GOSTACK__HIDDEN void gostack__debug_alloc(gostack_allocator_t *a, struct gostack__span *s, uintptr_t lo, size_t n);
GOSTACK__HIDDEN void gostack__debug_free(gostack_allocator_t *a, struct gostack__span *s, uintptr_t lo, size_t n);
/* A stack taken from a list must be an n-byte stack of a (else a free
 * stack's link was overwritten): throws otherwise. */
GOSTACK__HIDDEN void gostack__debug_check_link(gostack_allocator_t *a, uintptr_t lo, size_t n);
/* Walk a thread's cache of a: every stack free, of a, of the right order. */
GOSTACK__HIDDEN void gostack__debug_check_tcache(struct gostack__tcache *t);
/* A boolean environment variable; a bad value warns and gives def. */
GOSTACK__HIDDEN bool gostack__env_flag(const char *name, bool def);
/* GOSTACK_DEBUG=1 in the environment (read once). */
GOSTACK__HIDDEN bool gostack__debug_env(void);

/* ---- scavenger.c -------------------------------------------------------- */

/* CLOCK_MONOTONIC_COARSE in milliseconds (vDSO, no syscall). */
GOSTACK__HIDDEN uint64_t gostack__now_ms(void);
/* Make sure the background scavenger runs (started on first need, again in
 * a fork child); cheap when it does: one relaxed load. */
GOSTACK__HIDDEN void gostack__scavenger_kick(void);
/* Held by the scavenger for a whole pass, and by stats, reclaim and delete,
 * so that they never see a pass half done. Lock order: first of all. */
GOSTACK__HIDDEN extern pthread_mutex_t gostack__decay_lock;
GOSTACK__HIDDEN void gostack__scavenger_fork_prepare(void);
GOSTACK__HIDDEN void gostack__scavenger_fork_parent(void);
GOSTACK__HIDDEN void gostack__scavenger_fork_child(void);

/* ---- allocator.c ------------------------------------------------------- */

struct gostack__pools_ops;

/*
 * Invariants (whenever no alloc or free of this allocator is running):
 *   inuse  = sum over tstats (allocs - frees) sizes
 *   cached = sum over live tcaches of stackcache[o].size
 *   pooled = ops->pooled_bytes(pools)
 *   mapped = spans of this allocator not yet freed to the heap
 *   inuse + cached + pooled == mapped
 */
struct gostack_allocator {
	uint64_t id;                 /* unique, never reused; 0 is "none" */
	int slot;                    /* index into gostack__tls.slot */
	bool no_cache;
	bool debug;                  /* GOSTACK_DEBUG / config.debug: debug.c's checks */
	bool fast;                   /* !no_cache && !debug: the inline cached path applies */
	bool is_default;
	gostack_backend_t backend;
	size_t guard;                /* guard bytes below each stack, page-rounded; 0: none */
	size_t page;                 /* OS page size when guard != 0 */
	int decay_ms;                /* > 0, or -1: never */
	uint64_t decay_sweep_at;     /* decay_lock: the scavenger's next pool sweep of a */
	const struct gostack__pools_ops *ops;
	void *pools;
	_Alignas(GOSTACK__CACHELINE) _Atomic size_t mapped;
	struct gostack__tstat dead;      /* counters of retired tcaches */
	struct gostack__tstat orphan;    /* counters of cacheless operations */
	struct gostack__tcache *tcaches; /* registry lock */
	gostack_allocator_t *next, *prev;/* registry lock */
};

/* Where stacks of n bytes lie in a's spans (the geometry fields of struct
 * gostack__span). Without guards: naturally aligned and packed, 32 KiB pool
 * spans (Go's layout). With guards: each stack gets a slot of stride =
 * round2(max(n, page) + guard) bytes, the stack at its top (a stack under a
 * page starts a page of its own: the guard must be page-aligned below lo),
 * the guard directly below, the rest of the slot never touched (address
 * space, not memory); pool spans are max(32 KiB, stride). */
struct gostack__geom {
	size_t bytes, stride, lo_off;
	uint32_t nelems;
};

static inline void
gostack__geom_of(const gostack_allocator_t *a, size_t n, struct gostack__geom *g)
{
	if (a->guard == 0) {
		g->stride = n;
		g->lo_off = 0;
	} else {
		size_t e = n < a->page ? a->page : n;

		g->stride = gostack__round2(e + a->guard);
		g->lo_off = g->stride - e;
	}
	g->bytes = g->stride < GOSTACK__SPAN_SIZE ? GOSTACK__SPAN_SIZE : g->stride;
	g->nelems = (uint32_t)(g->bytes / g->stride);
}

#define GOSTACK__DECAY_DEFAULT_MS 1000

/* Record an operation that had no tcache (relaxed RMW on the allocator). */
static inline void
gostack__count_shared(_Atomic uint64_t *c, uint64_t d)
{
	atomic_fetch_add_explicit(c, d, memory_order_relaxed);
}

GOSTACK__HIDDEN extern gostack_allocator_t *gostack__allocators; /* registry lock */

/* ---- stats.c ----------------------------------------------------------- */

/* Sum of a's counters and its threads' cached bytes per order; registry lock held. */
GOSTACK__HIDDEN void gostack__sum_stats(gostack_allocator_t *a, struct gostack__tstat *sum,
    size_t cached[GOSTACK_NUM_ORDERS]);
GOSTACK__HIDDEN size_t gostack__inuse_of(const struct gostack__tstat *s);
/* GOSTACK_STATS=1: the default allocator's statistics on stderr (atexit). */
GOSTACK__HIDDEN void gostack__stats_at_exit(void);
/* Library init (pthread_once): TLS key, fork handlers. */
GOSTACK__HIDDEN void gostack__init(void);
/* Before core takes the registry lock on a path that gives stacks back to
 * the pools (flush, thread exit, delete): the backend's per-thread setup. */
GOSTACK__HIDDEN void gostack__thread_prepare(void);

#endif /* GOSTACK_INTERNAL_H */
