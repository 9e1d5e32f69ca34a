/*
 * core/mutex/: Go's mutex pools, the baseline backend (pools.h):
 * stackpool[order] in stackpool.c, stackLarge in stacklarge.c. Exactly Go's
 * locking: one padded mutex per order and one for stackLarge; never two held
 * at once; the heap lock may be taken under either (stackpoolalloc/free and
 * freeManual, through gostack__span_alloc/_free), never the reverse.
 */
#ifndef GOSTACK_MUTEX_H
#define GOSTACK_MUTEX_H

#include "../pools.h"

/* Go's mSpanList: a <sys/queue.h> LIST of spans, through the mutex
 * backend's area of each (below); insert() pushes at the front. */
struct gostack__mutex_span;
struct gostack__spanlist {
	LIST_HEAD(, gostack__mutex_span) spans;
};

/*
 * The mutex backend's fields of a span (span->pool). Under the span's order
 * lock (pool spans) or the stackLarge lock:
 *  - a POOL span is on stackpool[order].span iff manualFreeList != NULL
 *    (Go's invariant); allocCount = stacks handed out of it, including
 *    those in per-thread caches (Go's meaning); manualFreeList links the
 *    span's free stacks through their gclinks;
 *  - a LARGE span kept in stackLarge is on free[log2(npages)].
 *  - list is the list the span is on, NULL when on none.
 *  - batch links spans detached from stackLarge to be freed, owned by the
 *    thread that detached them.
 */
struct gostack__mutex_span {
	LIST_ENTRY(gostack__mutex_span) link;
	struct gostack__spanlist *list;
	struct gostack__gclink *manualFreeList;
	struct gostack__span *batch;
	uint32_t allocCount;
};
_Static_assert(sizeof(struct gostack__mutex_span) <= GOSTACK__SPAN_POOL_BYTES,
    "the mutex backend's span fields do not fit the span's pool area");

static inline struct gostack__mutex_span *
gostack__ms(struct gostack__span *s)
{
	return (struct gostack__mutex_span *)(void *)s->pool;
}

static inline struct gostack__span *
gostack__ms_span(struct gostack__mutex_span *m)
{
	return gostack__span_of_pool(m);   /* m is the pool area's first member */
}

/* The first span on l, or NULL; the span after s on its list, or NULL. */
static inline struct gostack__span *
gostack__spanlist_first(struct gostack__spanlist *l)
{
	return gostack__ms_span(LIST_FIRST(&l->spans));
}

static inline struct gostack__span *
gostack__spanlist_next(struct gostack__span *s)
{
	return gostack__ms_span(LIST_NEXT(gostack__ms(s), link));
}

struct gostack__mutex_pools {
	/* Go's stackpool[order]: .span holds exactly the order's spans whose
	 * manualFreeList is non-empty; a span with every stack handed out is on
	 * no list. free_bytes = bytes of free stacks on those lists. */
	struct {
		pthread_mutex_t mu;
		struct gostack__spanlist span;
		size_t free_bytes;
	} __attribute__((aligned(GOSTACK__PAD))) stackpool[GOSTACK_NUM_ORDERS];
	/* Go's stackLarge: free[i] holds freed large spans of 2^i pages;
	 * bytes = their total, at most GOSTACK__LARGE_KEEP. */
	struct {
		pthread_mutex_t lock;
		struct gostack__spanlist free[GOSTACK__LARGE_LISTS];
		size_t bytes;
	} __attribute__((aligned(GOSTACK__PAD))) stackLarge;
	gostack_allocator_t *a;
};

GOSTACK__HIDDEN void gostack__mutex_init(pthread_mutex_t *mu);
GOSTACK__HIDDEN void gostack__spanlist_insert(struct gostack__spanlist *l, struct gostack__span *s);
GOSTACK__HIDDEN void gostack__spanlist_remove(struct gostack__spanlist *l, struct gostack__span *s);

GOSTACK__HIDDEN struct gostack__span *gostack__stackLarge_get(void *p, unsigned log2npages);
GOSTACK__HIDDEN void gostack__stackLarge_put(void *p, struct gostack__span *s);
GOSTACK__HIDDEN size_t gostack__stackLarge_bytes(struct gostack__mutex_pools *mp);
/* Spans idle in stackLarge since before now back to the heap
 * (GOSTACK__RELEASE_ALL: all of them); returns the bytes. */
GOSTACK__HIDDEN size_t gostack__stackLarge_release(struct gostack__mutex_pools *mp, uint64_t now);

#endif /* GOSTACK_MUTEX_H */
