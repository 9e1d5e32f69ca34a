/*
 * debug.c: GOSTACK_DEBUG=1 (or config.debug). Allocators in debug mode take
 * the slow paths for every operation (the inline cached path tests one flag
 * and costs what it cost before) and add:
 *  - double-free detection at the call, on every path: a bit per stack in
 *    the span's out-of-line metadata, set by free, cleared by alloc; a free
 *    that finds it set is a double free;
 *  - poisoning (Go's stackPoisonCopy idea): a freed stack is filled with
 *    0xfc (a small stack below its top 16 bytes, where pools keep its link;
 *    for stacks over 64 KiB, the lowest 4 KiB and the top 64 KiB, so a huge
 *    stack is not committed by its own poison), checked when it is handed
 *    out again: a write after free is reported with its offset;
 *  - invariant checks of the thread's caches at flush and reclaim, and of
 *    the pools at reclaim (pools_ops.check).
 * Every report is one line starting "gostack:" and then abort().
 */
#include <string.h>

#include "pools.h"

#define POISON 0xfc
#define FULL_LIMIT ((size_t)64 << 10)
#define LOW_PART ((size_t)4 << 10)

static uint32_t
stack_bit(struct gostack__span *s, uintptr_t lo)
{
	if (atomic_load_explicit(&s->state, memory_order_relaxed) == GOSTACK__SPAN_LARGE)
		return 1;
	return (uint32_t)1 << gostack__span_index(s, lo);
}

/* The poisoned ranges of a stack [lo, lo + n): all of it but a small
 * stack's link (span.h). */
static void
ranges(uintptr_t lo, size_t n, uintptr_t r[2][2])
{
	if (n <= FULL_LIMIT) {
		r[0][0] = lo; r[0][1] = lo + n - (gostack__is_small(n) ? GOSTACK__LINK_SIZE : 0);
		r[1][0] = r[1][1] = 0;
	} else {
		r[0][0] = lo; r[0][1] = lo + LOW_PART;
		r[1][0] = lo + n - FULL_LIMIT; r[1][1] = lo + n;
	}
}

void
gostack__debug_free(struct gostack__span *s, uintptr_t lo, size_t n)
{
	uint32_t bit = stack_bit(s, lo);
	uintptr_t r[2][2];

	/* acq_rel: pairs with the fetch_and of the allocation that handed the
	 * stack out (and with another thread's racing double free): exactly one
	 * of two racing frees sees the bit clear. */
	if (atomic_fetch_or_explicit(&s->dbg_freed, bit, memory_order_acq_rel) & bit)
		gostack__throw("double free of stack [%#lx, %#lx)", (unsigned long)lo, (unsigned long)(lo + n));
	ranges(lo, n, r);
	for (int i = 0; i < 2; i++)
		if (r[i][1] > r[i][0])
			memset((void *)r[i][0], POISON, r[i][1] - r[i][0]);
}

void
gostack__debug_alloc(struct gostack__span *s, uintptr_t lo, size_t n)
{
	uint32_t bit = stack_bit(s, lo);
	uintptr_t r[2][2];

	/* acq_rel: pairs with the fetch_or of the free that put the stack back
	 * (the poison it wrote is then visible to the check below). */
	if (!(atomic_fetch_and_explicit(&s->dbg_freed, ~bit, memory_order_acq_rel) & bit))
		return;   /* never freed since its span was carved: not poisoned */
	ranges(lo, n, r);
	for (int i = 0; i < 2; i++) {
		for (uintptr_t p = r[i][0]; p < r[i][1]; p += sizeof(uint64_t)) {
			uint64_t w;

			memcpy(&w, (void *)p, sizeof w);
			if (w != 0xfcfcfcfcfcfcfcfcull)
				gostack__throw("stack [%#lx, %#lx) was written after it was freed (offset %#lx)",
				    (unsigned long)lo, (unsigned long)(lo + n), (unsigned long)(p - lo));
		}
	}
}

/* lo starts an n-byte stack of a live span of a (pool or large). */
static bool
is_stack_of(gostack_allocator_t *a, uintptr_t lo, size_t n)
{
	struct gostack__span *s = gostack__span_of(lo);
	uint8_t st = s != NULL ? atomic_load_explicit(&s->state, memory_order_relaxed) : 0;

	return s != NULL && (st == GOSTACK__SPAN_POOL || st == GOSTACK__SPAN_LARGE) &&
	    atomic_load_explicit(&s->alloc, memory_order_relaxed) == a &&
	    atomic_load_explicit(&s->elemsize, memory_order_relaxed) == n &&
	    gostack__span_index(s, lo) != UINT32_MAX;
}

void
gostack__debug_check_link(gostack_allocator_t *a, uintptr_t lo, size_t n)
{
	if (!is_stack_of(a, lo, n))
		gostack__throw("corrupt free list: %#lx is not a free %zu-byte stack of this allocator "
		    "(was a free stack's top 16 bytes, its link, written after free?)", (unsigned long)lo, n);
}

/* A stack in a debug allocator's thread cache links to itself: its link
 * word is free while it sits in a slot, and a write after free into it
 * shows up here (the poison covers the rest). */
void
gostack__debug_cache_link(struct gostack__gclink *x)
{
	x->next = x;
}

void
gostack__debug_check_cached(gostack_allocator_t *a, struct gostack__gclink *x, size_t n)
{
	uintptr_t lo = gostack__link_lo(x, n);

	if (!is_stack_of(a, lo, n) || x->next != x)
		gostack__throw("corrupt free list: the link of free stack [%#lx, %#lx) in the thread cache "
		    "was overwritten (its top 16 bytes written after free?)", (unsigned long)lo,
		    (unsigned long)(lo + n));
}

void
gostack__debug_check_tcache(struct gostack__tcache *t)
{
	gostack_allocator_t *a = t->alloc;

	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		size_t n = gostack__order_size(o);
		uint32_t count = atomic_load_explicit(&t->stackcache[o].n, memory_order_relaxed);
		struct gostack__gclink **slot = t->slot[o];

		if (count > GOSTACK__CACHE_SLOTS(o) || t->stackcache[o].cap != GOSTACK__CACHE_SLOTS(o))
			gostack__throw("corrupt thread cache %p: %u stacks on the %zu-byte list", (void *)t, count, n);
		for (uint32_t i = 0; i < count; i++) {
			if (!is_stack_of(a, gostack__link_lo(slot[i], n), n) || slot[i]->next != slot[i] ||
			    slot[i]->mark != gostack__free_key)
				gostack__throw("corrupt thread cache: link %p on the %zu-byte list is not that of a free "
				    "%zu-byte stack of this allocator (its top 16 bytes written after free?)",
				    (void *)slot[i], n, n);
		}
	}
}
