/*
 * struct gostack__span: Go's mspan, with only the fields the stack allocator
 * touches, plus the buddy-heap fields of mheap.c and a backend-private area.
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

struct gostack_allocator;

/* Flags of a free heap block (may be only partly true of a merged block). */
#define GOSTACK__BLOCK_HOLE  1u    /* may contain PROT_NONE holes: map back before use */
#define GOSTACK__BLOCK_DIRTY 2u    /* may hold committed pages: the scavenger's work */

/* Go's gclink: lives in the first word (at lo) of a FREE stack. */
struct gostack__gclink {
	struct gostack__gclink *next;
};

/* Go's mSpanList: intrusive, doubly linked; insert() pushes at the front. */
struct gostack__spanlist {
	struct gostack__span *first, *last;
};

enum gostack__span_state {
	GOSTACK__SPAN_NONE = 0,   /* not a span head: inside a block, or never used */
	GOSTACK__SPAN_FREE,       /* head of a free heap block */
	GOSTACK__SPAN_META,       /* the arena's own metadata */
	GOSTACK__SPAN_POOL,       /* a 32 KiB pool span carved into stacks of one order */
	GOSTACK__SPAN_LARGE       /* one large stack (>= 32 KiB) */
};

/*
 * Invariants:
 *  - state, elemsize and alloc are published with release stores by the heap
 *    (under the heap lock) before the span's memory is handed out, and read
 *    with relaxed or acquire loads by free()'s checks. They do not change
 *    while any stack of the span is live.
 *  - A POOL span: elemsize = 2 KiB << order, base is 32 KiB-aligned,
 *    allocCount = stacks handed out of it, including those in per-thread
 *    caches (Go's meaning). Under the mutex backend it is on
 *    stackpool[order].span iff manualFreeList != NULL (Go's invariant).
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
 *  - Heap fields (hnext, hprev, horder, hflags) belong to the heap lock.
 */
struct gostack__span {
	/* heap (mheap.c), heap lock */
	struct gostack__span *hnext, *hprev;   /* free-block list of its buddy order */
	_Atomic uint8_t state;
	uint8_t horder;            /* log2(bytes) - 15 */
	uint8_t hflags;            /* free block: GOSTACK__BLOCK_HOLE | GOSTACK__BLOCK_DIRTY */
	/* decay (scavenger.c), in gostack__now_ms() time: for a DIRTY free
	 * block, when its pages go back to the OS (heap lock); for a span idle in
	 * stackLarge, when it leaves the pool, 0 until the scavenger first sees
	 * it (that pool's lock, or owned by the thread that pushes or drains it) */
	uint64_t decay_at;
	uint8_t order;             /* pool spans: stack order */
	uint32_t allocCount;       /* Go's allocCount (mutex backend: pool lock) */
	uintptr_t base;            /* the heap block */
	size_t npages;             /* 8 KiB pages of the block */
	uint32_t stride, lo_off, guard;   /* geometry, above */
	uint32_t nelems;
	_Atomic size_t elemsize;
	_Atomic(struct gostack_allocator *) alloc;
	/* debug.c: bit i set while stack i of the span (bit 0: the large stack)
	 * has been freed by the user and not handed out again; 0 when the span
	 * leaves the heap */
	_Atomic uint32_t dbg_freed;
	/* mutex backend (stackpool.c, stacklarge.c), pool locks */
	struct gostack__span *next, *prev;
	struct gostack__spanlist *list;
	struct gostack__gclink *manualFreeList;
	/* lock-free backend's private area (ck_stack_entry, rcu_head, sweep counters) */
	_Alignas(16) unsigned char backend[48];
};

/* lo of stack i of span s. */
static inline uintptr_t
gostack__span_stack(const struct gostack__span *s, uint32_t i)
{
	return s->base + s->lo_off + (uintptr_t)i * s->stride;
}

/* Index of the stack at lo in s, or UINT32_MAX when lo does not start one. */
static inline uint32_t
gostack__span_index(const struct gostack__span *s, uintptr_t lo)
{
	uintptr_t off = lo - s->base - s->lo_off;   /* wraps when lo is below */
	uintptr_t i = off >> __builtin_ctz(s->stride);   /* stride: a power of two */

	if ((off & (s->stride - 1)) != 0 || i >= s->nelems)
		return UINT32_MAX;
	return (uint32_t)i;
}

/* A large span's stackLarge list: log2 of its stack's 8 KiB pages (what
 * stackalloc looks up; the block may be larger when the stack has a guard). */
static inline unsigned
gostack__large_list(const struct gostack__span *s)
{
	size_t n = atomic_load_explicit(&s->elemsize, memory_order_relaxed);

	return 63u - (unsigned)__builtin_clzll((unsigned long long)(n >> 13));
}

/* Bytes of stacks the span holds: what it adds to its allocator's mapped. */
static inline size_t
gostack__span_stack_bytes(const struct gostack__span *s)
{
	return (size_t)s->nelems * atomic_load_explicit(&s->elemsize, memory_order_relaxed);
}

#endif /* GOSTACK_SPAN_H */
