/*
 * struct gostack__span: Go's mspan, with only the fields the stack allocator
 * touches, the buddy-heap fields of mheap.c and an area for the pool backend
 * that owns the span.
 *
 * Every arena keeps one struct per 32 KiB unit, out of line (in the arena's
 * first units, never inside a stack), so the span of a stack is found from
 * its address in O(1) (gostack__span_of) without reading the stack.
 */
#ifndef GOSTACK_SPAN_H
#define GOSTACK_SPAN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "sizeclass.h"

struct gostack_allocator;

/*
 * Go's gclink: the link of a FREE small stack, in the stack's top
 * GOSTACK__LINK_SIZE bytes (Go keeps it at lo). Stacks grow down from hi, so
 * the top page is the first one a coroutine touches: a free stack costs no
 * page the coroutine that used it never touched, and a stack handed out
 * again faults in nothing new below its top page. The second word, at
 * hi - 8, is the free mark: gostack__free_key while the stack is free (set
 * when it is carved or freed, on every path), 0 once it is handed out (on
 * every path), so that freeing a stack that is already free is caught at
 * the call in every build, for one load and one store on a cache line the
 * link already touches (glibc's tcache key, the same idea). The key is
 * random per process, so a coroutine's own data matches it with chance
 * 2^-64. Large stacks are never linked through their memory (their span
 * metadata is) and carry their free flag there (large_free).
 */
#define GOSTACK__LINK_SIZE ((size_t)16)

struct gostack__gclink {
	struct gostack__gclink *next;
	uint64_t mark;   /* gostack__free_key while free (above) */
};

/* Random per process, never 0 (core/stack.c). */
extern uint64_t gostack__free_key __attribute__((visibility("hidden")));

/* A stack becomes free (carved, or freed after its mark was checked). */
static inline void
gostack__link_mark_free(struct gostack__gclink *x)
{
	x->mark = gostack__free_key;
}

/* The link of the free n-byte stack at lo, and back. */
static inline struct gostack__gclink *
gostack__link_of(uintptr_t lo, size_t n)
{
	return (struct gostack__gclink *)(lo + n - GOSTACK__LINK_SIZE);
}

static inline uintptr_t
gostack__link_lo(const struct gostack__gclink *x, size_t n)
{
	return (uintptr_t)x + GOSTACK__LINK_SIZE - n;
}

enum gostack__span_state {
	GOSTACK__SPAN_NONE = 0,   /* not a span head: inside a block, or never used */
	GOSTACK__SPAN_FREE,       /* head of a free heap block */
	GOSTACK__SPAN_META,       /* the arena's own metadata */
	GOSTACK__SPAN_POOL,       /* a pool span carved into stacks of one order */
	GOSTACK__SPAN_LARGE       /* one large stack (>= 32 KiB) */
};

/* Where stacks of n bytes lie in a span (the geometry fields of struct
 * gostack__span), computed by gostack__geom_of (internal.h). Without
 * guards: naturally aligned and packed, 32 KiB pool spans (Go's layout).
 * With guards: each stack gets a slot of stride = round2(max(n, page) +
 * guard) bytes, the stack at its top (a stack under a page starts a page of
 * its own: the guard must be page-aligned below lo), the guard directly
 * below, the rest of the slot never touched (address space, not memory);
 * pool spans are max(32 KiB, stride). */
struct gostack__geom {
	size_t bytes, stride, lo_off, guard;
	uint32_t nelems;
};

/* Bytes of a span's pool area (the backend's per-span fields). */
#define GOSTACK__SPAN_POOL_BYTES 48

/*
 * Invariants:
 *  - pool_of is alloc while state is POOL and NULL otherwise (stored with
 *    state by gostack__span_set_state, the only writer of either).
 *  - state, elemsize and alloc are written by the heap before the span's
 *    stacks can be handed out (state last, with release) and do not change
 *    while any stack of the span is live. free()'s checks read them relaxed:
 *    a stack reaches free() only after it was handed out, and the hand-off
 *    (a pool's lock or CAS, then the user's own transfer to the freeing
 *    thread) orders the heap's writes before the check; a bogus free of
 *    memory nobody was handed reads whatever is there and is reported (or,
 *    racing a span's carving, may be taken for a valid free: misuse).
 *  - A POOL span: elemsize = 2 KiB << order, order is set by the backend
 *    that carved it before any of its stacks is handed out.
 *  - A LARGE span: elemsize = the stack size, one stack.
 *  - Geometry (set by the heap before publication, constant while the span
 *    lives): nelems stacks of elemsize bytes, the first at base + lo_off, one
 *    every stride bytes (a power of two), each with `guard` bytes of guard
 *    pages directly below it. Without guards: stride = elemsize, lo_off = 0,
 *    nelems = 32 KiB / elemsize (pool) or 1 (large).
 *  - base is the start of the span's heap block; the struct describing the
 *    span is the one of the 32 KiB unit holding the first stack's lo (for a
 *    guarded stack that is not at base, a unit inside the block), so that
 *    spanOf(lo) finds it. Only spans with one stack can have lo_off >= 32 KiB.
 *    A small stack never crosses a 32 KiB unit, so spanOf(link) == spanOf(lo).
 *  - Heap fields (hlink, horder) belong to the heap lock.
 *  - pool[] belongs to the backend that owns the span (its struct is in its
 *    own header: core/mutex/mutex.h, lockfree/lockfree.h); zeroed by the heap
 *    when the span is handed out.
 */
/* Every doubly linked list in gostack is a <sys/queue.h> LIST. */
LIST_HEAD(gostack__spanhead, gostack__span);

struct gostack__span {
	/* heap (mheap.c), heap lock */
	LIST_ENTRY(gostack__span) hlink;   /* free-block list of its buddy order */
	_Atomic uint8_t state;
	uint8_t horder;            /* log2(bytes) - 15 */
	uint8_t order;             /* pool spans: stack order (set by the pools); LARGE spans:
	                              stackLarge's list (gostack__large_list; set by the heap) */
	/* LARGE spans: 1 while the stack is free (kept in stackLarge), 0 while
	 * it is handed out; tested and set by free, so a second free is caught
	 * (not two racing at the same instant: stack.c's large_giveback) */
	_Atomic uint8_t large_free;
	uint32_t stride_mask;      /* geometry: stride - 1, for the cached free's test (stack.c) */
	/* In gostack__now_ms() time. A free unit: when its pages go back to the
	 * OS if it is still dirty (heap lock). A span idle in stackLarge: when
	 * it leaves the pool, 0 until the scavenger first sees it (that pool's
	 * lock, or the thread that owns it after a pop or a drain). */
	uint64_t decay_at;
	uintptr_t base;            /* the heap block */
	size_t npages;             /* 8 KiB pages of the block */
	uint32_t stride, guard;    /* geometry, above */
	/* The geometry's lo_off (low 32 bits: gostack__span_lo_off), and
	 * profile.c's sampled stacks (high 32 bits: bit 32 + i set while stack
	 * i, bit 0 the large stack, is a sampled stack handed out and not yet
	 * freed). One word so that the cached free's test of lo against the
	 * geometry (stack.c) fails for a span with a sampled stack live, with
	 * no test of its own: the word equals lo mod stride only when no bit
	 * is set. lo_off is stored by the heap before publication, with the
	 * bits 0 (when the span leaves the heap); the bits change by relaxed
	 * 64-bit RMWs of the threads that hand out and free the span's stacks
	 * (the hand-off orders a handout's bit before its free). */
	_Atomic uint64_t lo_sampled;
	_Atomic size_t elemsize;
	_Atomic(struct gostack_allocator *) alloc;
	uint32_t nelems;           /* geometry (after the fields the cached free reads) */
	/* debug.c: bit i set while stack i of the span (bit 0: the large stack)
	 * has been freed by the user and not handed out again; 0 when the span
	 * leaves the heap */
	_Atomic uint32_t dbg_freed;
	/* alloc while state is POOL, NULL in every other state: the cached
	 * free's one test of both (stack.c). Written with state, before it
	 * (gostack__span_set_state), never otherwise. */
	_Atomic(struct gostack_allocator *) pool_of;
	_Alignas(16) unsigned char pool[GOSTACK__SPAN_POOL_BYTES];
};

/* Every store of a span's state: pool_of with it. Relaxed, as state's
 * stores always were: free()'s checks are ordered by the hand-off (the
 * invariants above), not by these stores. */
static inline void
gostack__span_set_state(struct gostack__span *s, uint8_t state)
{
	atomic_store_explicit(&s->pool_of, state == GOSTACK__SPAN_POOL ?
	    atomic_load_explicit(&s->alloc, memory_order_relaxed) : NULL, memory_order_relaxed);
	atomic_store_explicit(&s->state, state, memory_order_relaxed);
}

/* The span whose pool area starts at area (a backend's view of it back to
 * the span; area == NULL gives NULL). */
static inline struct gostack__span *
gostack__span_of_pool(void *area)
{
	return area == NULL ? NULL :
	    (struct gostack__span *)(void *)((char *)area - offsetof(struct gostack__span, pool));
}

/* The geometry's lo_off of span s (span.h's lo_sampled). */
static inline uint32_t
gostack__span_lo_off(const struct gostack__span *s)
{
	return (uint32_t)atomic_load_explicit(&((struct gostack__span *)s)->lo_sampled, memory_order_relaxed);
}

/* The sampled bits of span s (bit i: stack i; lo_sampled's high half). */
static inline uint32_t
gostack__span_sampled(const struct gostack__span *s)
{
	return (uint32_t)(atomic_load_explicit(&((struct gostack__span *)s)->lo_sampled, memory_order_relaxed) >> 32);
}

/* lo of stack i of span s. */
static inline uintptr_t
gostack__span_stack(const struct gostack__span *s, uint32_t i)
{
	return s->base + gostack__span_lo_off(s) + (uintptr_t)i * s->stride;
}

/* Index of the stack at lo in s, or UINT32_MAX when lo does not start one. */
static inline uint32_t
gostack__span_index(const struct gostack__span *s, uintptr_t lo)
{
	uintptr_t off = lo - s->base - gostack__span_lo_off(s);   /* wraps when lo is below */
	uintptr_t i = off >> __builtin_ctz(s->stride);   /* stride: a power of two */

	if ((off & (s->stride - 1)) != 0 || i >= s->nelems)
		return UINT32_MAX;
	return (uint32_t)i;
}

/* A large span's stackLarge list: log2 of its stack's 8 KiB pages (what
 * stackalloc looks up; the block may be larger when the stack has a guard),
 * which the heap stores in order when it hands out the span (one byte
 * load, not a bsr of elemsize, on the way to the per-CPU bin's count). */
static inline unsigned
gostack__large_list(const struct gostack__span *s)
{
	return s->order;
}

/* Bytes of stacks the span holds: what it adds to its allocator's mapped. */
static inline size_t
gostack__span_stack_bytes(const struct gostack__span *s)
{
	return (size_t)s->nelems * atomic_load_explicit(&s->elemsize, memory_order_relaxed);
}

#endif /* GOSTACK_SPAN_H */
