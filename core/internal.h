/*
 * gostack internal API: constants, Go's size arithmetic, and the cross-file
 * names of core/ (all `gostack__`, hidden from the shared library's ABI).
 *
 * core/ is the engine; the pools are two peer backends behind pools.h.
 * Layers call down only: stack/stackcache/allocator/stats/scavenger ->
 * pools.h (a backend) -> span.c -> mheap.c -> os.c.
 *
 * Files of core/ and the Go concept each one carries:
 *   sizeclass.h    round2, stack orders, stacklog2 (stack.go arithmetic)
 *   span.h         struct gostack__span (Go's mspan), gclink, geometry
 *   span.c         allocManual / freeManual for an allocator (mapped)
 *   mheap.c, .h    arenas, the buddy page heap, dirty bits, spanOf (mheap.go)
 *   os.c           mmap/madvise/munmap, the only OS calls; throw
 *   meta.c         small fixed-size metadata blocks (allocators, caches)
 *   stackcache.c   per-thread caches: stackcacherefill, stackcacherelease,
 *                  stackcache_clear, thread exit (mcache.stackcache)
 *   stack.c        stackalloc / stackfree and the misuse checks of free
 *   allocator.c    allocators, the default allocator, reclaim, fork
 *   stats.c        statistics: totals, per order and large, printing
 *   scavenger.c    the background scavenger: idle memory back after decay_ms
 *   debug.c        debug mode's checks
 *   tools.h, .c    what AddressSanitizer and Valgrind are told about stacks
 *   options.h, .c  every tunable and environment variable, one table
 *   pools.h, .c    the interface of the global pools, the table of backends
 *   mutex/         Go's mutex stackpool[order] and stackLarge (a backend)
 * ../lockfree/     the lock-free stackpool and stackLarge (the other one)
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
#include "options.h"
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
/* mincore(): one byte per page of [p, p + size), bit 0 set if resident. */
GOSTACK__HIDDEN int gostack__os_resident(void *p, size_t size, unsigned char *vec);
/*
 * Stack memory is MADV_NOHUGEPAGE unless GOSTACK_THP=1: with transparent
 * huge pages "always", touching one 2 KiB stack of an arena would commit a
 * 2 MiB page (thousands of idle coroutines would cost GiBs), khugepaged
 * would collapse free stacks back into RSS after decay gave them back, and
 * a 4 KiB MADV_DONTNEED or guard would split huge pages. Applied to whole
 * arenas.
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

/* ---- span.c ------------------------------------------------------------ */

/* Go's allocManual for allocator a: a span in state `state` (SPAN_POOL or
 * SPAN_LARGE) holding stacks of elemsize bytes laid out for a's guard
 * (gostack__geom_of), guards installed, its stack bytes added to a's
 * mapped. NULL with errno ENOMEM. May be called under a pool lock. */
GOSTACK__HIDDEN struct gostack__span *gostack__span_alloc(gostack_allocator_t *a,
    uint8_t state, size_t elemsize);
/* Go's freeManual: the span leaves a (its bytes off a's mapped) for the
 * heap, which keeps its pages committed for a's decay_ms (idle: the span sat
 * idle that long already; the scavenger's next pass gives it back). The
 * caller guarantees that no thread can still touch its memory (lockfree/:
 * after a grace period). May be called under a pool lock: it leaves the
 * scavenger's kick to gostack__scavenger_poke(). */
GOSTACK__HIDDEN void gostack__span_free(gostack_allocator_t *a, struct gostack__span *s, bool idle);
/* Go's spanOf (mheap.c): the span head whose memory starts at the 32 KiB unit
 * holding addr, or NULL when addr is not in an arena. Reads only the arena
 * table and the arena's out-of-line span array, never the stack. Callers
 * check state. */
GOSTACK__HIDDEN struct gostack__span *gostack__span_of(uintptr_t addr);

/* ---- stackcache.c ------------------------------------------------------ */

/* Counters a thread keeps for one allocator. Only the owning thread writes
 * them, with a relaxed load and store (gostack__count: on x86-64 one add
 * to memory without a lock prefix, not an atomic RMW); stats() reads them
 * with relaxed loads from any thread. The allocator's `dead` and
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

/*
 * Go's stackfreelist, kept as an array: Go links a P's free stacks through
 * their gclinks; here the thread's cache holds their links' addresses in
 * slots, so that a pop and a refill read no stack memory (Go's list makes
 * every pop load the next link from the top of the stack just popped, a
 * line the stacks' 4 KiB-aligned tops make cold, on the chain of loads one
 * pop hands the next) and a refill or release copies pointers. The
 * arithmetic is Go's, unchanged: Go's `size` is n stacks of the order's
 * size, a refill takes half of _StackCacheSize, a free finding the list
 * full (size >= _StackCacheSize: n >= cap) releases down to half first.
 * Order o holds at most GOSTACK_CACHE_SIZE bytes, GOSTACK__CACHE_SLOTS(o)
 * stacks (16, 8, 4, 2).
 */
#define GOSTACK__CACHE_SLOTS(o) ((uint32_t)(GOSTACK_CACHE_SIZE / ((size_t)GOSTACK_MIN_SIZE << (o))))
/* Go's _StackCacheSize/2 / size, the stacks of order o a refill takes and a
 * release keeps (8, 4, 2, 1): a shift, since sizes are powers of two (a
 * division by the order's size was a 64-bit div on every refill and
 * release). */
#define GOSTACK__CACHE_HALF(o) ((uint32_t)((GOSTACK_CACHE_SIZE / 2) / GOSTACK_MIN_SIZE) >> (o))

struct gostack__stackfreelist {
	_Atomic uint32_t n;   /* stacks in the list; written by the owner only */
	uint32_t cap;         /* GOSTACK__CACHE_SLOTS(o), set with the cache (gostack__tcache_slow) */
};

/*
 * A thread's cache for one allocator (Go's per-P mcache.stackcache).
 * Invariants:
 *  - stackcache[o] and its slots are touched only by the owning thread,
 *    except by gostack_allocator_delete() and by a fork child adopting the
 *    caches of threads that did not survive fork, both under the registry
 *    lock and when the owner cannot be using the allocator.
 *  - order o's list is slot[o][0 .. stackcache[o].n), each the gclink of a
 *    free stack of o (marked free), the last one the most recently pushed;
 *    stackcache[o].n <= stackcache[o].cap == GOSTACK__CACHE_SLOTS(o) (its
 *    bytes, Go's size, at most GOSTACK_CACHE_SIZE).
 *  - id == alloc->id while linked on alloc->tcaches; id == 0 once orphaned
 *    (allocator deleted); the struct then stays with the thread's slot and is
 *    reused by the next allocator given that slot.
 */
struct gostack__tcache {
	_Atomic uint64_t id;
	gostack_allocator_t *alloc;
	struct gostack__stackfreelist stackcache[GOSTACK_NUM_ORDERS];
	struct gostack__gclink *slot[GOSTACK_NUM_ORDERS][GOSTACK__CACHE_SLOTS(0)];
	uint32_t prof_left;        /* profile.c: allocations until the next sample (0: not drawn yet) */
	uint64_t prof_rng;         /* profile.c: this cache's sampling random state */
	/* profile.c's reserve, per order: NULL, or a free stack (its link
	 * marked free, off the list) of more than one page whose pages below
	 * its top page a sample freed here found not resident, kept for this
	 * thread's next sample of that order, which then gives nothing back to
	 * the OS (no madvise). Written by the owner only (like stackcache),
	 * read relaxed by stats: counted as cached. At most one stack per
	 * order; given back with the lists by stackcache_clear. */
	_Atomic(struct gostack__gclink *) prof_clean[GOSTACK_NUM_ORDERS];
	struct gostack__tstat st;
	LIST_ENTRY(gostack__tcache) link;      /* alloc->tcaches, registry lock */
	struct gostack__tls *owner;
};


/* At most this many allocators have per-thread caches at once; others run
 * every operation on the global pools (Go's "no P"). */
#define GOSTACK__SLOTS 32

enum { GOSTACK__TLS_FRESH = 0, GOSTACK__TLS_LIVE, GOSTACK__TLS_EXITING };

/* Per-thread state, initial-exec TLS: no __tls_get_addr on the fast path.
 * slot[i] is never NULL: &gostack__tcache_none (id 0, which no allocator
 * has) while the thread has no cache in slot i, so that tcache_mine's test
 * of the id is its only test. slot[GOSTACK__SLOTS] is always
 * &gostack__tcache_none: the slot of cacheless allocators.
 * kick: this thread made memory of an allocator with decay idle and has not
 * kicked the scavenger yet (gostack__scavenger_note / _poke).
 * deferred: gostack_allocator_free_deferred left stacks to free (their list
 * is in stack.c's own TLS, out of this initial-exec block, which a dlopen'd
 * library must keep small). */
struct gostack__tls {
	struct gostack__tcache *slot[GOSTACK__SLOTS + 1];
	int state;
	bool kick;
	bool deferred;   /* stack.c: this thread has deferred frees waiting */
};
extern __thread struct gostack__tls gostack__tls
    __attribute__((tls_model("initial-exec"))) GOSTACK__HIDDEN;
/* The cache of no allocator: id 0 forever, its lists empty, never written. */
extern struct gostack__tcache gostack__tcache_none GOSTACK__HIDDEN;

/* Registry lock: the allocator list, slots, every allocator's tcache list and
 * tcache ids. Lock order: registry -> pools (order locks, stackLarge) -> heap -> meta. */
extern pthread_mutex_t gostack__registry_lock GOSTACK__HIDDEN;

/* The calling thread's cache for a, created on first use; NULL when a has no
 * slot, the thread is exiting, or memory ran out (then: no cache). */
GOSTACK__HIDDEN struct gostack__tcache *gostack__tcache_slow(gostack_allocator_t *a);
/* Registers the thread-exit hook (pthread key) once; false if the thread is
 * exiting or the key cannot be set. */
GOSTACK__HIDDEN bool gostack__tls_register(void);
GOSTACK__HIDDEN bool gostack__stackcacherefill(struct gostack__tcache *t, int order);
GOSTACK__HIDDEN void gostack__stackcacherelease(struct gostack__tcache *t, int order);
GOSTACK__HIDDEN void gostack__stackcache_clear(struct gostack__tcache *t);
/* Flush t, fold its counters into its allocator and unlink it (registry lock held). */
GOSTACK__HIDDEN void gostack__tcache_retire(struct gostack__tcache *t);
GOSTACK__HIDDEN void gostack__tstat_add(struct gostack__tstat *dst, const struct gostack__tstat *src);
GOSTACK__HIDDEN void gostack__tls_key_init(void);
/* Fork child: adopt the caches of threads that did not survive fork. */
GOSTACK__HIDDEN void gostack__tcache_fork_child(void);

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GOSTACK__TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define GOSTACK__TSAN 1
#endif

static inline void
gostack__count(_Atomic uint64_t *c, uint64_t d)
{
	/* Single writer: a relaxed load and store, not an RMW (no lock
	 * prefix); readers (stats) load relaxed and see the old value or the
	 * new one. On x86-64 that is one add to memory, which gcc does not
	 * emit for the C11 pair (a load, an add and a store in a register:
	 * three instructions more on each cached alloc and free). A TSan
	 * build keeps the C11 form, which TSan sees. */
#if defined(__x86_64__) && !defined(GOSTACK__TSAN)
	__asm__("addq %1, %0" : "+m"(*(uint64_t *)c) : "er"(d));
#else
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
	    memory_order_relaxed);
#endif
}

/* ---- debug.c ----------------------------------------------------------- */

/* Called on the slow paths of allocators with debug set. */
GOSTACK__HIDDEN void gostack__debug_alloc(struct gostack__span *s, uintptr_t lo, size_t n);
GOSTACK__HIDDEN void gostack__debug_free(struct gostack__span *s, uintptr_t lo, size_t n);
/* A stack taken from a list must be an n-byte stack of a (else a free
 * stack's link was overwritten): throws otherwise. */
GOSTACK__HIDDEN void gostack__debug_check_link(gostack_allocator_t *a, uintptr_t lo, size_t n);
/* The link of a stack entering a debug allocator's thread cache is set to
 * a value check_cached and check_tcache test (a write after free into it). */
GOSTACK__HIDDEN void gostack__debug_cache_link(struct gostack__gclink *x);
/* A stack popped from a debug allocator's thread cache: throws if its link
 * was overwritten, or it is not a free n-byte stack of a. */
GOSTACK__HIDDEN void gostack__debug_check_cached(gostack_allocator_t *a, struct gostack__gclink *x, size_t n);
/* Walk a thread's cache of a: every stack free, of a, of the right order. */
GOSTACK__HIDDEN void gostack__debug_check_tcache(struct gostack__tcache *t);

/* ---- scavenger.c -------------------------------------------------------- */

/* CLOCK_MONOTONIC_COARSE in milliseconds (vDSO, no syscall). */
GOSTACK__HIDDEN uint64_t gostack__now_ms(void);
/* Make sure the background scavenger runs (started on first need, again in
 * a fork child); when it does, one seq_cst RMW and one seq_cst load. May
 * start a thread: never called with a gostack lock held. */
GOSTACK__HIDDEN void gostack__scavenger_kick(void);

/* Memory of a became idle (stacks given to a pool, a span to the heap):
 * if a decays, the scavenger must run; the kick itself waits until the
 * thread holds no lock (gostack__scavenger_poke). The scavenger thread is
 * thus started only once there is idle memory to give back. */
#define gostack__scavenger_note(a) do { \
	if ((a)->decay_ms >= 0) \
		gostack__tls.kick = true; \
} while (0)

/* The engine's slow paths, once they hold no lock: the kick that a
 * gostack__scavenger_note left for this thread, if any (one TLS load). */
static inline void
gostack__scavenger_poke(void)
{
	if (__builtin_expect(gostack__tls.kick, 0)) {
		gostack__tls.kick = false;
		gostack__scavenger_kick();
	}
}
/* Deferred frees (stack.c): the ones whose stack the thread is not running
 * on are done; called where that may have changed (slow paths, flush,
 * thread exit), with no gostack lock held. */
GOSTACK__HIDDEN void gostack__deferred_run(void);
static inline void
gostack__deferred_poke(void)
{
	if (__builtin_expect(gostack__tls.deferred, 0))
		gostack__deferred_run();
}

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
 *   cached = sum over live tcaches of stackcache[o].n stacks of order o
 *   pooled = ops->pooled_bytes(pools)
 *   mapped = spans of this allocator not yet freed to the heap
 *   inuse + cached + pooled == mapped
 */
struct gostack_allocator {
	uint64_t id;                 /* unique, never reused; 0 is "none" */
	int slot;                    /* index into gostack__tls.slot */
	bool no_cache;
	bool debug;                  /* GOSTACK_DEBUG / config.debug: debug.c's checks */
	bool fast;                   /* !no_cache && !debug, not under Valgrind: the inline
	                                cached free applies (guarded or not, with a profile
	                                or not: a sampled stack's span fails its test) */
	bool fast_alloc;             /* fast, no profile: the inline cached allocation */
	bool fast_prof;              /* fast with a profile: the inline cached allocation
	                                with the sample countdown (stack.c) */
	unsigned profile;            /* one in N sampled for the depth profile; 0: off */
	bool percpu;                 /* asks the lock-free pools for their per-CPU tier */
	struct gostack__profile *prof;   /* profile.c's counters, when profile != 0 */
	bool is_default;
	gostack_backend_t backend;
	char name[GOSTACK_NAME_MAX + 1];   /* config.name, "" if none */
	size_t guard;                /* guard bytes below each stack, page-rounded; 0: none */
	size_t page;                 /* OS page size when guard != 0 */
	int decay_ms;                /* > 0, or -1: never */
	uint64_t decay_sweep_at;     /* decay_lock: the scavenger's next pool sweep of a */
	const struct gostack__pools_ops *ops;
	void *pools;
	_Alignas(GOSTACK__CACHELINE) _Atomic size_t mapped;
	struct gostack__tstat dead;      /* counters of retired tcaches */
	struct gostack__tstat orphan;    /* counters of cacheless operations */
	LIST_HEAD(, gostack__tcache) tcaches; /* registry lock */
	LIST_ENTRY(gostack_allocator) link;   /* gostack__allocators, registry lock */
};

/* The geometry of a's spans of n-byte stacks (span.h: struct gostack__geom). */
static inline void
gostack__geom_of(const gostack_allocator_t *a, size_t n, struct gostack__geom *g)
{
	g->guard = a->guard;
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

/* Record an operation that had no tcache (relaxed RMW on the allocator). */
static inline void
gostack__count_shared(_Atomic uint64_t *c, uint64_t d)
{
	atomic_fetch_add_explicit(c, d, memory_order_relaxed);
}

LIST_HEAD(gostack__allocator_list, gostack_allocator);
GOSTACK__HIDDEN extern struct gostack__allocator_list gostack__allocators; /* registry lock */

/* The calling thread's cache in a's slot: never NULL (struct gostack__tls),
 * but a's only if gostack__tcache_is(t, a): a slot may hold none, another
 * allocator's cache, or an orphan with id 0. The fast paths test that
 * themselves and use t, so that no NULL test follows the id's (an atomic
 * load is not a dereference the compiler counts). */
static inline struct gostack__tcache *
gostack__tcache_slot(const gostack_allocator_t *a)
{
	return gostack__tls.slot[a->slot];
}

static inline bool
gostack__tcache_is(const struct gostack__tcache *t, const gostack_allocator_t *a)
{
	return atomic_load_explicit(&((struct gostack__tcache *)t)->id, memory_order_relaxed) == a->id;
}

/* The calling thread's cache for a if it already has one, else NULL. */
static inline struct gostack__tcache *
gostack__tcache_mine(const gostack_allocator_t *a)
{
	struct gostack__tcache *t = gostack__tcache_slot(a);

	return gostack__tcache_is(t, a) ? t : NULL;
}


/* The newest (default) symbol version of a function whose struct grew
 * (cmake/gostack.map, core/abi.c): put after the function's definition.
 * Shared library only: `remove` leaves no unversioned alias, so the version
 * script cannot give the name a second version. */
#if defined(GOSTACK_SHARED)
#define GOSTACK__DEFAULT_VERSION(name, node) __asm__(".symver " #name ", " #name "@@" node ", remove")
#else
#define GOSTACK__DEFAULT_VERSION(name, node) _Static_assert(1, "static builds carry no versions")
#endif

/* ---- stats.c ----------------------------------------------------------- */

/* Sum of a's counters and its threads' cached bytes per order; registry lock held. */
GOSTACK__HIDDEN void gostack__sum_stats(gostack_allocator_t *a, struct gostack__tstat *sum,
    size_t cached[GOSTACK_NUM_ORDERS]);
GOSTACK__HIDDEN size_t gostack__inuse_of(const struct gostack__tstat *s);
/* GOSTACK_STATS=1: the default allocator's statistics on stderr (atexit). */
GOSTACK__HIDDEN void gostack__stats_at_exit(void);
/* Library init (pthread_once): TLS key, fork handlers. */
GOSTACK__HIDDEN void gostack__init(void);

#endif /* GOSTACK_INTERNAL_H */
