/*
 * stacklarge.c: Go's stackLarge under one mutex. Freed large spans wait in
 * free[log2(npages)] and are reused before the heap is asked. Go empties
 * stackLarge at the end of every GC cycle; gostack has no GC, so it bounds
 * it instead: at most GOSTACK__LARGE_KEEP (64 MiB) per allocator; a free
 * that would go past it returns the span to the heap at once (whose pages
 * then stay committed for decay_ms). The scavenger and reclaim empty it
 * (gostack__stackLarge_release).
 */
#include "mutex.h"

struct gostack__span *
gostack__stackLarge_get(void *p, unsigned log2npages)
{
	struct gostack__mutex_pools *mp = p;
	struct gostack__spanlist *l = &mp->stackLarge.free[log2npages];
	struct gostack__span *s;

	pthread_mutex_lock(&mp->stackLarge.lock);
	s = gostack__spanlist_first(l);
	if (s != NULL) {
		gostack__spanlist_remove(l, s);
		mp->stackLarge.bytes -= gostack__span_stack_bytes(s);
	}
	pthread_mutex_unlock(&mp->stackLarge.lock);
	return s;
}

void
gostack__stackLarge_put(void *p, struct gostack__span *s)
{
	struct gostack__mutex_pools *mp = p;
	size_t bytes = gostack__span_stack_bytes(s);

	s->decay_at = 0;   /* the scavenger stamps it when it first sees it (no clock here) */
	pthread_mutex_lock(&mp->stackLarge.lock);
	if (mp->stackLarge.bytes + bytes <= GOSTACK__LARGE_KEEP) {
		gostack__spanlist_insert(&mp->stackLarge.free[gostack__large_list(s)], s);
		mp->stackLarge.bytes += bytes;
		s = NULL;
	}
	pthread_mutex_unlock(&mp->stackLarge.lock);
	if (s != NULL)
		gostack__span_free(mp->a, s, false);
}

size_t
gostack__stackLarge_bytes(struct gostack__mutex_pools *mp)
{
	size_t n;

	pthread_mutex_lock(&mp->stackLarge.lock);
	n = mp->stackLarge.bytes;
	pthread_mutex_unlock(&mp->stackLarge.lock);
	return n;
}

size_t
gostack__stackLarge_release(struct gostack__mutex_pools *mp, uint64_t now)
{
	struct gostack__span *old = NULL;
	size_t bytes = 0;
	bool all = now == GOSTACK__RELEASE_ALL;

	/* Detach under the lock (Go's freeStackSpans), free outside it. */
	pthread_mutex_lock(&mp->stackLarge.lock);
	for (int i = 0; i < GOSTACK__LARGE_LISTS && mp->stackLarge.bytes != 0; i++) {
		struct gostack__spanlist *l = &mp->stackLarge.free[i];

		for (struct gostack__span *s = gostack__spanlist_first(l), *nx; s != NULL; s = nx) {
			nx = gostack__spanlist_next(s);
			if (!all) {
				if (s->decay_at == 0)
					s->decay_at = now + (uint64_t)mp->a->decay_ms;   /* first seen idle */
				if (s->decay_at > now)
					continue;
			}
			gostack__spanlist_remove(l, s);
			mp->stackLarge.bytes -= gostack__span_stack_bytes(s);
			bytes += gostack__span_stack_bytes(s);
			gostack__ms(s)->batch = old;
			old = s;
		}
	}
	pthread_mutex_unlock(&mp->stackLarge.lock);
	while (old != NULL) {
		struct gostack__span *s = old;

		old = gostack__ms(s)->batch;
		gostack__span_free(mp->a, s, !all);
	}
	return bytes;
}
