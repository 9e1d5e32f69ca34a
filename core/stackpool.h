/*
 * Go's mutex pools (the baseline backend): stackpool[order] in stackpool.c,
 * stackLarge in stacklarge.c. Exactly Go's locking: one padded mutex per
 * order and one for stackLarge; never two held at once; the heap lock may be
 * taken under either (stackpoolalloc/free and freeManual), never the reverse.
 */
#ifndef GOSTACK_STACKPOOL_H
#define GOSTACK_STACKPOOL_H

#include "pools.h"

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
GOSTACK__HIDDEN size_t gostack__stackLarge_reclaim(struct gostack__mutex_pools *mp);
GOSTACK__HIDDEN size_t gostack__stackLarge_decay(struct gostack__mutex_pools *mp, uint64_t now);

#endif /* GOSTACK_STACKPOOL_H */
