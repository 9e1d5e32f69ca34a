/*
 * stack.c: Go's stackalloc and stackfree, with the checks that catch a bad
 * free at the call.
 *
 * Small stacks (< 32 KiB): the calling thread's cache, a list pop or push
 * with no atomic RMW, no lock and no syscall (refill and release move half a
 * cache to or from the global pool). Go's stackNoCache, a thread without a
 * cache slot or an exiting thread go to the global pool directly.
 * Large stacks (>= 32 KiB): stackLarge, then the heap.
 * Last, the ways in for libraries that cannot call free with {lo, hi} on
 * their own stack: free by lo alone, malloc-style callbacks, and the free
 * deferred until the thread has left the stack.
 */
#include "mheap.h"
#include "pools.h"
#include "profile.h"
#include "tools.h"

#include <sys/random.h>
#include <time.h>

uint64_t gostack__free_key = 0x9e3779b97f4a7c15ull;   /* until load: nonzero, never matches 0 */

/* The free mark's key (span.h): random per process, odd, never 0. */
__attribute__((constructor)) static void
free_key_init(void)
{
	uint64_t k = 0;
	struct timespec ts;

	if (getrandom(&k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		k = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&k;
		k *= 0xbf58476d1ce4e5b9ull;
	}
	gostack__free_key = k | 1;
}

static inline struct gostack__tcache *
tcache_of(gostack_allocator_t *a)
{
	struct gostack__tcache *t = gostack__tcache_mine(a);

	return gostack__likely(t != NULL) ? t : gostack__tcache_slow(a);
}

static gostack_t
fail(int err)
{
	errno = err;
	return (gostack_t){ 0, 0 };
}

unsigned
gostack_version(void)
{
	return GOSTACK_VERSION_NUMBER;
}

size_t
gostack_good_size(size_t size)
{
	if (size - 1 >= GOSTACK_MAX_SIZE) {   /* 0 wraps */
		errno = EINVAL;
		return 0;
	}
	return gostack__round2(size);
}

static _Noreturn __attribute__((cold, noinline)) void
double_free(uintptr_t lo, uintptr_t hi)
{
	gostack__throw("double free of stack [%#lx, %#lx)", (unsigned long)lo, (unsigned long)hi);
}

/* A small stack is freed: caught if it is free already (its mark), then
 * marked free. */
static inline void
mark_free(struct gostack__gclink *x, uintptr_t lo, uintptr_t hi)
{
	if (gostack__unlikely(x->mark == gostack__free_key))
		double_free(lo, hi);
	gostack__link_mark_free(x);
}

/* The large span s (its one n-byte stack) handed out: counted on t (the
 * allocator's orphan counters without one) and marked in use; its lo. The
 * slow path and the plain allocator's large path both end here. */
static inline __attribute__((always_inline)) uintptr_t
large_handout(gostack_allocator_t *a, struct gostack__tcache *t, struct gostack__span *s, size_t n)
{
	if (t != NULL) {
		gostack__count(&t->st.large_allocs, 1);
		gostack__count(&t->st.large_alloc_bytes, n);
	} else {
		gostack__count_shared(&a->orphan.large_allocs, 1);
		gostack__count_shared(&a->orphan.large_alloc_bytes, n);
	}
	atomic_store_explicit(&s->large_free, 0, memory_order_relaxed);   /* ours alone now */
	return gostack__span_stack(s, 0);
}

/* The large stack [lo, lo + n) of span s given back, its checks done: the
 * double-free test, the counters (as above), the pools, the scavenger. */
static inline __attribute__((always_inline)) void
large_giveback(gostack_allocator_t *a, struct gostack__tcache *t, struct gostack__span *s, uintptr_t lo, size_t n)
{
	/* A load and a store, as the small stacks' mark: a free after the
	 * first (ordered after it by whatever told the caller the stack was
	 * free to give back again: a join, a lock, the pool's hand-off to the
	 * next alloc, whose store of 0 comes after this one's 1) sees 1. Two
	 * frees racing at the same instant may both see 0, as two racing
	 * frees of a small stack may both miss its mark (README, "Double
	 * frees"). Relaxed: the flag orders nothing; the pools' push and pop
	 * order the span. An exchange would catch the race too, but it was
	 * a quarter of the large pair's time (the 256 KiB pair 1.3x faster
	 * without it, gostack_micro_ab). */
	if (atomic_load_explicit(&s->large_free, memory_order_relaxed) != 0)
		double_free(lo, lo + n);
	atomic_store_explicit(&s->large_free, 1, memory_order_relaxed);
	if (t != NULL) {
		gostack__count(&t->st.large_frees, 1);
		gostack__count(&t->st.large_free_bytes, n);
	} else {
		gostack__count_shared(&a->orphan.large_frees, 1);
		gostack__count_shared(&a->orphan.large_free_bytes, n);
	}
	a->ops->large_put(a->pools, s);
	gostack__scavenger_note(a);   /* idle in stackLarge, or dirty in the heap */
	gostack__scavenger_poke();
}

static gostack_t
stackalloc_large(gostack_allocator_t *a, size_t n)
{
	unsigned log2npage = gostack__stacklog2(n >> GOSTACK__PAGE_SHIFT);
	struct gostack__span *s = a->ops->large_get(a->pools, log2npage);
	struct gostack__tcache *t;

	if (s == NULL) {
		s = gostack__span_alloc(a, GOSTACK__SPAN_LARGE, n);
		gostack__scavenger_poke();
		if (s == NULL)
			return fail(ENOMEM);
	}
	t = tcache_of(a);
	uintptr_t lo = large_handout(a, t, s, n);

	if (a->debug)
		gostack__debug_check_link(a, lo, n);   /* stackLarge's link was sound */
	return (gostack_t){ lo, lo + n };
}

static gostack_t
stackalloc_nocache(gostack_allocator_t *a, struct gostack__tcache *t, int order, size_t n)
{
	struct gostack__gclink *x;
	size_t got = a->ops->pool_get(a->pools, order, 1, &x);   /* a one-slot array */

	gostack__scavenger_poke();
	if (got == 0)
		return fail(ENOMEM);
	if (t != NULL) {
		gostack__count(&t->st.allocs[order], 1);
		gostack__count(&t->st.pool_out[order], 1);
	} else {
		gostack__count_shared(&a->orphan.allocs[order], 1);
		gostack__count_shared(&a->orphan.pool_out[order], 1);
	}
	uintptr_t lo = gostack__link_lo(x, n);

	x->mark = 0;   /* handed out */
	if (a->debug)
		gostack__debug_check_link(a, lo, n);   /* the pool's link was sound */
	return (gostack_t){ lo, lo + n };
}

/* Everything but a cache hit: the full Go stackalloc. */
static gostack_t
stackalloc_any(gostack_allocator_t *a, size_t size)
{
	if (gostack__unlikely(a == NULL))
		return fail(EINVAL);
	if (gostack__unlikely(size - 1 >= GOSTACK_MAX_SIZE))   /* 0 wraps */
		return fail(EINVAL);
	size_t n = gostack__round2(size);

	if (!gostack__is_small(n))
		return stackalloc_large(a, n);

	int order = gostack__order(n);
	struct gostack__tcache *t = tcache_of(a);

	if (t == NULL || a->no_cache)
		return stackalloc_nocache(a, t, order, n);

	struct gostack__stackfreelist *c = &t->stackcache[order];
	uint32_t have = atomic_load_explicit(&c->n, memory_order_relaxed);

	if (have == 0) {
		if (!gostack__stackcacherefill(t, order))
			return fail(ENOMEM);
		have = atomic_load_explicit(&c->n, memory_order_relaxed);
	}
	struct gostack__gclink *x = t->slot[order][have - 1];
	uintptr_t lo = gostack__link_lo(x, n);

	if (a->debug)
		gostack__debug_check_cached(a, x, n);   /* before handing it out */
	atomic_store_explicit(&c->n, have - 1, memory_order_relaxed);
	x->mark = 0;   /* handed out */
	gostack__count(&t->st.allocs[order], 1);
	return (gostack_t){ lo, lo + n };
}

/* A sample's stack from this thread's reserve for a (internal.h): a clean
 * stack of size's order, handed out; {0, 0} if there is none. */
static gostack_t
reserve_pop(gostack_allocator_t *a, size_t size)
{
	size_t n = gostack__round2(size);
	struct gostack__tcache *t;
	struct gostack__gclink *x;

	if (!gostack__is_small(n) || a->no_cache || (t = tcache_of(a)) == NULL)
		return (gostack_t){ 0, 0 };
	int order = gostack__order(n);

	if ((x = atomic_load_explicit(&t->prof_clean[order], memory_order_relaxed)) == NULL)
		return (gostack_t){ 0, 0 };
	atomic_store_explicit(&t->prof_clean[order], NULL, memory_order_relaxed);
	x->mark = 0;   /* handed out */
	gostack__count(&t->st.allocs[order], 1);
	return (gostack_t){ gostack__link_lo(x, n), gostack__link_lo(x, n) + n };
}

/* The slow path of an allocation. With a profile the sample is drawn
 * first (a failing allocation counts too): a sample takes the thread's
 * reserved clean stack when there is one. */
static __attribute__((noinline)) gostack_t
stackalloc_slow(gostack_allocator_t *a, size_t size)
{
	gostack__deferred_poke();
	bool sample = a != NULL && a->profile != 0 && size - 1 < GOSTACK_MAX_SIZE &&
	    gostack__profile_take(a, gostack__tcache_mine(a));
	gostack_t r = sample ? reserve_pop(a, size) : (gostack_t){ 0, 0 };
	bool clean = r.lo != 0;

	if (!clean)
		r = stackalloc_any(a, size);
	if (r.lo != 0)
		gostack__tool_alloc(r.lo, r.hi - r.lo);
	if (r.lo != 0 && a->debug)
		gostack__debug_alloc(gostack__span_of_inline(r.lo), r.lo, r.hi - r.lo);
	if (r.lo != 0 && sample)
		gostack__profile_handout(gostack__span_of_inline(r.lo), r.lo, r.hi - r.lo, clean);
	return r;
}

/*
 * The cached paths: a small size, this thread's cache for a, a stack in it
 * (alloc) or room for one (free). The allocation has two copies: the plain
 * one (a->fast_alloc) and, for an allocator with a depth profile
 * (a->fast_prof), one that counts down to the next sample (profile.c) and
 * leaves the sample to the slow path; the plain one carries nothing of the
 * profile (the second copy is in a function of its own, alloc_prof,
 * reached from the branch the plain path already takes). The free has one
 * copy for both (a->fast): a span with a sampled stack live fails the test
 * of lo against the span's geometry, the word that holds its sampled bits
 * (span.h), so the sample is measured by the slow path with no test of its
 * own on the cached one.
 * An empty cache (alloc) or a full one (free) is refilled or released by
 * an out-of-line tail (cached_refill, cached_release) that starts from what
 * the cached path already checked, rather than from the top of the slow
 * path; everything else goes to the slow paths, each called last, so the
 * public functions save no register for any of them.
 */

/* The pop of a cached stack of order o (n bytes) off list c holding
 * `have` > 0 stacks: its top slot. */
static inline __attribute__((always_inline)) gostack_t
cached_pop(struct gostack__tcache *t, struct gostack__stackfreelist *c, uint32_t have,
    size_t order, size_t n, bool prof)
{
	struct gostack__gclink *x = t->slot[order][have - 1];
	uintptr_t hi = (uintptr_t)x + GOSTACK__LINK_SIZE;

	if (prof)
		t->prof_left--;
	atomic_store_explicit(&c->n, have - 1, memory_order_relaxed);
	x->mark = 0;   /* handed out */
	gostack__count(&t->st.allocs[order], 1);
	gostack__tool_alloc_fast(hi - n, n);
	return (gostack_t){ hi - n, hi };
}

/*
 * The cached path found its list empty: Go's stackcacherefill, then the
 * pop. The deferred free waiting, if any, goes first: it may land in this
 * very list. Out of memory: the slow path tries again and fails with ENOMEM.
 */
static __attribute__((noinline)) gostack_t
cached_refill(gostack_allocator_t *a, size_t size, struct gostack__tcache *t, int order, bool prof)
{
	struct gostack__stackfreelist *c = &t->stackcache[order];

	gostack__deferred_poke();
	if (atomic_load_explicit(&c->n, memory_order_relaxed) == 0 && !gostack__stackcacherefill(t, order))
		return stackalloc_slow(a, size);
	return cached_pop(t, c, atomic_load_explicit(&c->n, memory_order_relaxed), (size_t)order,
	    gostack__order_size(order), prof);
}

static inline __attribute__((always_inline)) gostack_t
cached_alloc(gostack_allocator_t *a, size_t size, bool prof)
{
	/* round2 and order with one bsr, for 1 <= size <= 16 KiB: l = 10..13
	 * (63 - clz as 63 ^ clz, which gcc folds into the bsr) */
	unsigned l = 63u ^ (unsigned)__builtin_clzll((unsigned long long)((size - 1) | (GOSTACK__FIXED_STACK - 1)));
	size_t n = (size_t)2 << l;
	size_t order = l - 10;   /* unsigned: no sign extension in the indexing */
	struct gostack__tcache *t = gostack__tcache_slot(a);

	if (gostack__unlikely(!gostack__tcache_is(t, a)) || (prof && gostack__unlikely(t->prof_left <= 1)))
		return stackalloc_slow(a, size);   /* no cache yet; or this one may be the sample */
	struct gostack__stackfreelist *c = &t->stackcache[order];
	uint32_t have = atomic_load_explicit(&c->n, memory_order_relaxed);

	if (gostack__unlikely(have == 0))
		return cached_refill(a, size, t, (int)order, prof);
	return cached_pop(t, c, have, order, n, prof);
}

/*
 * The large path of a plain allocator (a->fast_alloc), 16 KiB < size <= 1 GiB:
 * the pools' stackLarge (and the lock-free pools' per-CPU bins) straight
 * from here, past the slow path's checks that a plain allocator cannot
 * need (debug, profile, Valgrind). Nothing there (a new span needed), or
 * no cache for the counters: the slow path, which does it all.
 */
static __attribute__((noinline)) gostack_t
large_alloc_plain(gostack_allocator_t *a, size_t size)
{
	/* round2 and stacklog2 of the pages with one bsr: size - 1 >= 16 KiB,
	 * so l >= 14 and n = 2^(l + 1) >= 32 KiB is its own round2 */
	unsigned l = 63u ^ (unsigned)__builtin_clzll((unsigned long long)(size - 1));
	size_t n = (size_t)2 << l;
	struct gostack__tcache *t = gostack__tcache_slot(a);
	struct gostack__span *s;

	if (gostack__unlikely(!gostack__tcache_is(t, a)) ||
	    (s = a->ops->large_get(a->pools, l + 1 - GOSTACK__PAGE_SHIFT)) == NULL)
		return stackalloc_slow(a, size);
	uintptr_t lo = large_handout(a, t, s, n);

	gostack__tool_alloc_fast(lo, n);
	return (gostack_t){ lo, lo + n };
}

/* The profiled copy of the cached allocation (a small size, a->fast_prof),
 * and everything else that is not the plain copy: the large path of a
 * plain allocator, or the slow path. Each out of line, so that
 * gostack_allocator_alloc holds the plain copy alone (the registers the
 * others need are saved in there, not here); the profiled copy is reached
 * from the plain copy's own tests with one more (its pair 1.08x of plain
 * with no sample drawn, against 1.11x behind alloc_not_plain's tests). */
static __attribute__((noinline)) gostack_t
alloc_prof(gostack_allocator_t *a, size_t size)
{
	return cached_alloc(a, size, true);
}

static __attribute__((noinline)) gostack_t
alloc_not_plain(gostack_allocator_t *a, size_t size)
{
	if (a != NULL && a->fast_alloc && size - 1 - GOSTACK__SMALL_LIMIT / 2 < GOSTACK_MAX_SIZE - GOSTACK__SMALL_LIMIT / 2)
		return large_alloc_plain(a, size);
	return stackalloc_slow(a, size);
}

gostack_t
gostack_allocator_alloc(gostack_allocator_t *a, size_t size)
{
	if (gostack__likely(a != NULL && size - 1 < GOSTACK__SMALL_LIMIT / 2)) {
		if (gostack__likely(a->fast_alloc))
			return cached_alloc(a, size, false);
		if (a->fast_prof)
			return alloc_prof(a, size);
	}
	return alloc_not_plain(a, size);
}

/* Cold and out of line: the hot path passes lo and hi in registers and never
 * spills the gostack_t to memory. */
static _Noreturn __attribute__((cold, noinline)) void
bad_free(uintptr_t lo, uintptr_t hi, const char *why)
{
	gostack__throw("bad free of stack [%#lx, %#lx): %s", (unsigned long)lo, (unsigned long)hi, why);
}

/*
 * The span of a stack being freed, or a throw naming the problem. Reads only
 * gostack's metadata (the arena table and span array), never the stack.
 */
static inline struct gostack__span *
check_free(gostack_allocator_t *a, uintptr_t lo, uintptr_t hi)
{
	size_t n = hi - lo;

	if (gostack__unlikely(hi <= lo || !gostack__is_pow2(n) || n < GOSTACK_MIN_SIZE ||
	    n > GOSTACK_MAX_SIZE))
		bad_free(lo, hi, "size is not a power of two between 2 KiB and 1 GiB");
	if (gostack__unlikely((lo & ((n < GOSTACK__SPAN_SIZE ? n : GOSTACK__SPAN_SIZE) - 1)) != 0))
		bad_free(lo, hi, "misaligned lo");
	struct gostack__span *s = gostack__span_of_inline(lo);

	if (gostack__unlikely(s == NULL))
		bad_free(lo, hi, "not memory gostack allocated (heap, C stack or foreign)");
	uint8_t state = atomic_load_explicit(&s->state, memory_order_relaxed);
	gostack_allocator_t *owner = atomic_load_explicit(&s->alloc, memory_order_relaxed);
	size_t elemsize = atomic_load_explicit(&s->elemsize, memory_order_relaxed);

	if (gostack__unlikely(state != GOSTACK__SPAN_POOL && state != GOSTACK__SPAN_LARGE))
		bad_free(lo, hi, "not a stack handed out by gostack (already freed, or interior memory)");
	if (gostack__unlikely(owner != a))
		bad_free(lo, hi, "belongs to another allocator");
	if (gostack__unlikely(elemsize != n))
		bad_free(lo, hi, "size does not match the stack handed out");
	if (gostack__unlikely(gostack__span_index(s, lo) == UINT32_MAX))
		bad_free(lo, hi, "lo is not the start of a stack (interior or guard memory)");
	return s;
}

/* The push of a freed stack's link x (order o, marked free) onto list c
 * holding `have` < cap stacks: the slot first, then the count
 * (stackcache_clear). */
static inline __attribute__((always_inline)) void
cached_push(struct gostack__tcache *t, struct gostack__stackfreelist *c, struct gostack__gclink *x,
    size_t order, uint32_t have)
{
	t->slot[order][have] = x;
	atomic_store_explicit(&c->n, have + 1, memory_order_relaxed);
	gostack__count(&t->st.frees[order], 1);
}

/* Everything but a cache hit: the full Go stackfree, with every check. */
static __attribute__((noinline)) void
stackfree_slow(gostack_allocator_t *a, uintptr_t lo, uintptr_t hi)
{
	gostack__deferred_poke();
	if (lo == 0 && hi == 0)
		return;
	if (gostack__unlikely(a == NULL))
		bad_free(lo, hi, "NULL allocator");
	size_t n = hi - lo;
	struct gostack__span *s = check_free(a, lo, hi);
	struct gostack__tcache *t;
	bool clean = false;   /* a sample fit for this thread's reserve */

	if (a->profile != 0 && gostack__profile_sampled(s, lo))
		clean = gostack__profile_free(a, s, lo, n) && !a->debug;   /* before anything writes into it */
	if (a->debug) {
		gostack__tool_prefree(lo, n);
		gostack__debug_free(s, lo, n);   /* double free; poison */
	}
	gostack__tool_free(lo, n);   /* before the link is written */

	if (!gostack__is_small(n)) {
		large_giveback(a, tcache_of(a), s, lo, n);
		return;
	}
	int order = gostack__order(n);
	struct gostack__gclink *x = gostack__link_of(lo, n);

	mark_free(x, lo, hi);
	t = tcache_of(a);
	if (t == NULL || a->no_cache) {
		if (t != NULL) {
			gostack__count(&t->st.frees[order], 1);
			gostack__count(&t->st.pool_in[order], 1);
		} else {
			gostack__count_shared(&a->orphan.frees[order], 1);
			gostack__count_shared(&a->orphan.pool_in[order], 1);
		}
		a->ops->pool_put(a->pools, order, &x, 1);
		gostack__scavenger_note(a);
		gostack__scavenger_poke();
		return;
	}
	if (clean && atomic_load_explicit(&t->prof_clean[order], memory_order_relaxed) == NULL) {
		atomic_store_explicit(&t->prof_clean[order], x, memory_order_relaxed);   /* the reserve */
		gostack__count(&t->st.frees[order], 1);
		return;
	}
	struct gostack__stackfreelist *c = &t->stackcache[order];

	if (atomic_load_explicit(&c->n, memory_order_relaxed) >= c->cap) {
		gostack__stackcacherelease(t, order);   /* before the push, as in Go */
		gostack__scavenger_poke();
	}
	if (a->debug)
		gostack__debug_cache_link(x);
	cached_push(t, c, x, order, atomic_load_explicit(&c->n, memory_order_relaxed));
}

/* The cached path of a free found its list full (its stack checked and
 * marked free): the deferred free waiting, if any (it may land here), then
 * Go's stackcacherelease before the push, as the slow path does it. */
static __attribute__((noinline)) void
cached_release(struct gostack__tcache *t, struct gostack__gclink *x, int order)
{
	struct gostack__stackfreelist *c = &t->stackcache[order];

	gostack__deferred_poke();
	gostack__stackcacherelease(t, order);
	gostack__scavenger_poke();
	cached_push(t, c, x, order, atomic_load_explicit(&c->n, memory_order_relaxed));
}

/*
 * The large path of the cached free (a->fast): s (found by the cached path)
 * the LARGE span of a, its stack exactly [lo, hi) (elemsize is a power of
 * two the allocator set; lo the span's one stack, so aligned) and not a
 * sample (the test of lo against lo_sampled, as the cached path's), this
 * thread's cache for the counters. The checks of check_free, in that
 * shape; the double free is caught by large_giveback's test.
 * Anything else: the slow path (a sampled stack is measured there).
 */
static __attribute__((noinline)) void
free_not_cached(gostack_allocator_t *a, struct gostack__span *s, uintptr_t lo, uintptr_t hi)
{
	size_t n = hi - lo;
	struct gostack__tcache *t;

	if (s == NULL || atomic_load_explicit(&s->state, memory_order_relaxed) != GOSTACK__SPAN_LARGE ||
	    atomic_load_explicit(&s->alloc, memory_order_relaxed) != a ||
	    atomic_load_explicit(&s->elemsize, memory_order_relaxed) != n ||
	    lo - s->base != atomic_load_explicit(&s->lo_sampled, memory_order_relaxed) ||
	    (t = gostack__tcache_mine(a)) == NULL) {
		stackfree_slow(a, lo, hi);
		return;
	}
	gostack__tool_free_fast(lo, n);
	large_giveback(a, t, s, lo, n);
}

/*
 * The cached path of a free: the span (two loads, never the stack) a pool
 * span of a handing out n-byte stacks, lo where one of its stacks starts,
 * this thread's cache for a; no sampled stack live in the span. Anything
 * else takes free_not_cached, then the slow path, which checks and reports every
 * misuse. "A pool span of a" is one test, of pool_of (span.h: a while the
 * state is POOL, NULL in any other). No test of the size comes first: a pool span's elemsize is a
 * small power of two, so hi - lo matching it says that much already ({0,
 * 0}, large stacks and garbage find no pool span, or another size).
 *
 * "Where a stack starts" is the span's geometry (span.h), one test for
 * every layout: the span's block is aligned to its size, which is at least
 * the stride, so lo starts stack i exactly when lo mod stride == lo_off
 * (unguarded: stride n, lo_off 0, the natural alignment; guarded: the
 * stack at the top of its slot, the guard below). The test also bounds i:
 * spanOf found the span from lo's own 32 KiB unit, so lo is inside the
 * span's stacks (a stride of 32 KiB or more holds one stack, at lo_off).
 * It compares lo mod stride with the whole of lo_sampled: lo_off with the
 * span's sampled bits above it, which are 0 unless a profile sampled one
 * of its stacks (then this free, whichever stack it is, goes slow).
 */
static inline __attribute__((always_inline)) void
cached_free(gostack_allocator_t *a, uintptr_t lo, uintptr_t hi)
{
	size_t n = hi - lo;
	struct gostack__span *s = gostack__span_of_inline(lo);

	if (gostack__unlikely(s == NULL ||
	    atomic_load_explicit(&s->pool_of, memory_order_relaxed) != a ||   /* a POOL span of a */
	    atomic_load_explicit(&s->elemsize, memory_order_relaxed) != n ||
	    (lo & s->stride_mask) != atomic_load_explicit(&s->lo_sampled, memory_order_relaxed))) {
		free_not_cached(a, s, lo, hi);
		return;
	}
	struct gostack__tcache *t = gostack__tcache_slot(a);

	if (gostack__unlikely(!gostack__tcache_is(t, a))) {
		stackfree_slow(a, lo, hi);
		return;
	}
	unsigned order = s->order;   /* set before the span's stacks are handed out; unsigned: no sign extension */
	struct gostack__stackfreelist *c = &t->stackcache[order];
	uint32_t have = atomic_load_explicit(&c->n, memory_order_relaxed);
	struct gostack__gclink *x = (struct gostack__gclink *)(hi - GOSTACK__LINK_SIZE);

	gostack__tool_free_fast(lo, n);   /* before the link is written */
	mark_free(x, lo, hi);
	if (gostack__unlikely(have >= c->cap))   /* Go's size >= _StackCacheSize */
		cached_release(t, x, (int)order);
	else
		cached_push(t, c, x, order, have);
}

void
gostack_allocator_free(gostack_allocator_t *a, gostack_t stk)
{
	if (gostack__likely(a != NULL && a->fast))
		cached_free(a, stk.lo, stk.hi);
	else
		stackfree_slow(a, stk.lo, stk.hi);
}

/* ---- frees by lo alone, and frees that wait ------------------------------ */

/* The stack whose lo is lo, its size from the span (never the stack), or a
 * throw: for frees that know only lo. */
static gostack_t
stack_at(uintptr_t lo)
{
	struct gostack__span *s = gostack__span_of_inline(lo);
	uint8_t state = s != NULL ? atomic_load_explicit(&s->state, memory_order_relaxed) : GOSTACK__SPAN_NONE;

	if (gostack__unlikely(state != GOSTACK__SPAN_POOL && state != GOSTACK__SPAN_LARGE))
		bad_free(lo, lo, s == NULL ? "not memory gostack allocated (heap, C stack or foreign)" :
		    "not the lo of a stack handed out by gostack");
	return (gostack_t){ lo, lo + atomic_load_explicit(&s->elemsize, memory_order_relaxed) };
}

void
gostack_allocator_free_lo(gostack_allocator_t *a, uintptr_t lo)
{
	if (lo == 0)
		return;   /* as free(NULL), and as freeing {0, 0} */
	gostack_allocator_free(a, stack_at(lo));
}

void
gostack_free_lo(uintptr_t lo)
{
	if (lo == 0)
		return;
	gostack_allocator_free(gostack_default_allocator(), stack_at(lo));
}

void *
gostack_cb_alloc(size_t size, void *allocator_data)
{
	gostack_allocator_t *a = allocator_data != NULL ? allocator_data : gostack_default_allocator();

	if (a == NULL)
		return NULL;   /* errno: ENOMEM */
	return (void *)gostack_allocator_alloc(a, size).lo;
}

void
gostack_cb_dealloc(void *ptr, size_t size, void *allocator_data)
{
	gostack_allocator_t *a = allocator_data != NULL ? allocator_data : gostack_default_allocator();

	(void)size;   /* the size asked for, not the stack's: recovered from lo */
	gostack_allocator_free_lo(a, (uintptr_t)ptr);
}

/*
 * Deferred frees. A stack is freed as soon as the thread's current frame is
 * not inside it: a library that defers the stack it runs on calls gostack
 * again only after it switched away (to its scheduler or the next
 * coroutine), and one that defers a stack it is not on gets it freed at
 * once. Since a thread runs on one stack at a time, at most one deferred
 * free ever waits per thread: the slot below, in this thread's own TLS
 * (default TLS model: only slow paths look at it, after the initial-exec
 * flag gostack__tls.deferred said it is full). Only the thread touches it.
 */
static __thread struct {
	gostack_allocator_t *a;
	uintptr_t lo, hi;
} deferred;

static inline bool
running_on(uintptr_t lo, uintptr_t hi)
{
	uintptr_t sp = (uintptr_t)__builtin_frame_address(0);

	return sp >= lo && sp < hi;
}

/* Out of line: the paths that poke it test a flag and carry none of this. */
__attribute__((noinline, cold)) void
gostack__deferred_run(void)
{
	if (deferred.lo == 0 || running_on(deferred.lo, deferred.hi))
		return;
	gostack_allocator_t *a = deferred.a;
	uintptr_t lo = deferred.lo, hi = deferred.hi;

	deferred.lo = deferred.hi = 0;   /* emptied first: the free may come back here */
	gostack__tls.deferred = false;
	gostack_allocator_free(a, (gostack_t){ lo, hi });
}

void
gostack_allocator_free_deferred(gostack_allocator_t *a, gostack_t stk)
{
	uintptr_t lo = stk.lo, hi = stk.hi;

	if (lo == 0 && hi == 0)
		return;
	if (gostack__unlikely(a == NULL))
		bad_free(lo, hi, "NULL allocator");
	gostack__deferred_run();   /* the one waiting, if this thread left it */
	if (!running_on(lo, hi)) {
		gostack_allocator_free(a, (gostack_t){ lo, hi });
		return;
	}
	/* Every check of a free, now, where the caller can be named. */
	struct gostack__span *s = check_free(a, lo, hi);

	if (gostack__is_small(hi - lo) ? gostack__link_of(lo, hi - lo)->mark == gostack__free_key :
	    atomic_load_explicit(&s->large_free, memory_order_relaxed) != 0)
		double_free(lo, hi);
	if (deferred.lo == lo)
		double_free(lo, hi);
	if (deferred.lo != 0)   /* running on both: they overlap, so one is not a stack */
		bad_free(lo, hi, "deferred while another deferred stack holds this frame");
	(void)gostack__tls_register();   /* so that thread exit frees it */
	deferred.a = a;
	deferred.lo = lo;
	deferred.hi = hi;
	gostack__tls.deferred = true;
}

void
gostack_free_deferred(gostack_t stk)
{
	if (stk.lo == 0 && stk.hi == 0)
		return;
	gostack_allocator_free_deferred(gostack_default_allocator(), stk);
}
