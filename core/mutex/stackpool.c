/*
 * stackpool.c: Go's global stackpool[order] under one mutex per order
 * (runtime/stack.go: stackpoolalloc, stackpoolfree, and the locked loops of
 * stackcacherefill / stackcacherelease / stackcache_clear), the baseline the
 * lock-free pools are measured against. Go's GC phase is always "off" here:
 * a span whose stacks are all free goes back to the heap at once (whose
 * pages then stay committed for decay_ms, or until the heap passes
 * GOSTACK__HEAP_RETAIN: mheap.c).
 */
#include "mutex.h"

void
gostack__mutex_init(pthread_mutex_t *mu)
{
	pthread_mutexattr_t at;

	/* Go's runtime lock spins briefly before it sleeps; the adaptive
	 * glibc mutex is the closest pthread equivalent. */
	pthread_mutexattr_init(&at);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
	pthread_mutexattr_settype(&at, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
	pthread_mutex_init(mu, &at);
	pthread_mutexattr_destroy(&at);
}

void
gostack__spanlist_insert(struct gostack__spanlist *l, struct gostack__span *s)
{
	LIST_INSERT_HEAD(&l->spans, gostack__ms(s), link);
	gostack__ms(s)->list = l;
}

void
gostack__spanlist_remove(struct gostack__spanlist *l, struct gostack__span *s)
{
	struct gostack__mutex_span *m = gostack__ms(s);

	if (m->list != l)
		gostack__throw("span %p is not on list %p", (void *)s, (void *)l);
	LIST_REMOVE(m, link);
	m->list = NULL;
}

/* Go's stackpoolalloc; caller holds stackpool[order].mu. NULL: out of memory. */
static struct gostack__gclink *
stackpoolalloc(struct gostack__mutex_pools *mp, int order)
{
	struct gostack__spanlist *list = &mp->stackpool[order].span;
	struct gostack__span *s = gostack__spanlist_first(list);
	size_t elemsize = gostack__order_size(order);

	if (s == NULL) {
		/* No span with a free stack: carve a new one. */
		s = gostack__span_alloc(mp->a, GOSTACK__SPAN_POOL, elemsize);
		if (s == NULL)
			return NULL;
		s->order = (uint8_t)order;
		/* Ascending pushes: the list is descending, the first stack
		 * handed out is the highest one, as in Go. */
		for (uint32_t i = 0; i < s->nelems; i++) {
			struct gostack__gclink *x = gostack__link_of(gostack__span_stack(s, i), elemsize);

			gostack__link_mark_free(x);
			x->next = gostack__ms(s)->manualFreeList;
			gostack__ms(s)->manualFreeList = x;
		}
		gostack__spanlist_insert(list, s);
		mp->stackpool[order].free_bytes += gostack__span_stack_bytes(s);
	}
	struct gostack__mutex_span *m = gostack__ms(s);
	struct gostack__gclink *x = m->manualFreeList;

	if (x == NULL)
		gostack__throw("span %p has no free stacks", (void *)s->base);
	m->manualFreeList = x->next;
	m->allocCount++;
	if (m->manualFreeList == NULL)
		gostack__spanlist_remove(list, s);   /* now fully handed out */
	mp->stackpool[order].free_bytes -= elemsize;
	return x;
}

/* Go's stackpoolfree; caller holds stackpool[order].mu. */
static void
stackpoolfree(struct gostack__mutex_pools *mp, struct gostack__gclink *x, int order)
{
	struct gostack__span *s = gostack__span_of((uintptr_t)x);
	struct gostack__spanlist *list = &mp->stackpool[order].span;

	struct gostack__mutex_span *m;

	if (s == NULL || atomic_load_explicit(&s->state, memory_order_relaxed) != GOSTACK__SPAN_POOL)
		gostack__throw("freeing stack link %p not in a stack span", (void *)x);
	m = gostack__ms(s);
	if (m->manualFreeList == NULL)
		gostack__spanlist_insert(list, s);   /* has a free stack again */
	x->next = m->manualFreeList;
	m->manualFreeList = x;
	m->allocCount--;
	mp->stackpool[order].free_bytes += gostack__order_size(order);
	if (m->allocCount == 0) {
		/* Span completely free (and no GC phase here): back to the heap. */
		gostack__spanlist_remove(list, s);
		m->manualFreeList = NULL;
		mp->stackpool[order].free_bytes -= gostack__span_stack_bytes(s);
		gostack__span_free(mp->a, s, false);
	}
}

static size_t
mutex_pool_get(void *p, int order, size_t n, struct gostack__gclink **out)
{
	struct gostack__mutex_pools *mp = p;
	size_t got = 0;

	pthread_mutex_lock(&mp->stackpool[order].mu);
	while (got < n) {
		struct gostack__gclink *x = stackpoolalloc(mp, order);

		if (x == NULL)
			break;
		out[got++] = x;
	}
	pthread_mutex_unlock(&mp->stackpool[order].mu);
	return got;
}

static void
mutex_pool_put(void *p, int order, struct gostack__gclink *const *in, size_t n)
{
	struct gostack__mutex_pools *mp = p;

	pthread_mutex_lock(&mp->stackpool[order].mu);
	for (size_t i = 0; i < n; i++)
		stackpoolfree(mp, in[i], order);
	pthread_mutex_unlock(&mp->stackpool[order].mu);
}

static void *
mutex_create(gostack_allocator_t *a)
{
	struct gostack__mutex_pools *mp = gostack__meta_alloc(sizeof *mp);

	if (mp == NULL)
		return NULL;
	mp->a = a;
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++)
		gostack__mutex_init(&mp->stackpool[o].mu);
	gostack__mutex_init(&mp->stackLarge.lock);
	return mp;
}

static size_t
mutex_pooled_bytes(void *p, const struct gostack__tstat *sum, size_t per_class[GOSTACK_NUM_ORDERS + 1])
{
	struct gostack__mutex_pools *mp = p;
	size_t n = 0, b;

	(void)sum;   /* counted exactly under the order locks instead */
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		pthread_mutex_lock(&mp->stackpool[o].mu);
		b = mp->stackpool[o].free_bytes;
		pthread_mutex_unlock(&mp->stackpool[o].mu);
		n += b;
		if (per_class != NULL)
			per_class[o] = b;
	}
	b = gostack__stackLarge_bytes(mp);
	if (per_class != NULL)
		per_class[GOSTACK_NUM_ORDERS] = b;
	return n + b;
}

static size_t
mutex_release(void *p, uint64_t now, bool sweep)
{
	/* Pool spans went to the heap the moment they emptied (Go, GC off):
	 * nothing to sweep; the heap decays their pages. */
	(void)sweep;
	return gostack__stackLarge_release(p, now);
}

static void
mutex_destroy(void *p)
{
	struct gostack__mutex_pools *mp = p;

	gostack__stackLarge_release(mp, GOSTACK__RELEASE_ALL);
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		if (!LIST_EMPTY(&mp->stackpool[o].span.spans))
			gostack__throw("destroying pools with live spans of order %d", o);
		pthread_mutex_destroy(&mp->stackpool[o].mu);
	}
	pthread_mutex_destroy(&mp->stackLarge.lock);
	gostack__meta_free(mp, sizeof *mp);
}

/* Debug mode: Go's invariants of every order, under its lock. */
static void
mutex_check(void *p)
{
	struct gostack__mutex_pools *mp = p;

	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		size_t n = gostack__order_size(o), free_bytes = 0;

		pthread_mutex_lock(&mp->stackpool[o].mu);
		for (struct gostack__span *s = gostack__spanlist_first(&mp->stackpool[o].span); s != NULL;
		    s = gostack__spanlist_next(s)) {
			struct gostack__mutex_span *m = gostack__ms(s);
			size_t nfree = 0, per = s->nelems;

			if (atomic_load_explicit(&s->state, memory_order_relaxed) != GOSTACK__SPAN_POOL ||
			    s->order != o || m->list != &mp->stackpool[o].span)
				gostack__throw("stackpool[%d]: span %p is not a pool span of this order", o, (void *)s->base);
			for (struct gostack__gclink *x = m->manualFreeList; x != NULL; x = x->next) {
				if (gostack__span_of((uintptr_t)x) != s ||
				    gostack__span_index(s, gostack__link_lo(x, n)) == UINT32_MAX || ++nfree > per)
					gostack__throw("stackpool[%d]: span %p has a corrupt free list (%p)", o,
					    (void *)s->base, (void *)x);
			}
			if (nfree == 0 || nfree + m->allocCount != per)
				gostack__throw("stackpool[%d]: span %p: %zu free + allocCount %u != %zu stacks", o,
				    (void *)s->base, nfree, m->allocCount, per);
			free_bytes += nfree * n;
		}
		if (free_bytes != mp->stackpool[o].free_bytes)
			gostack__throw("stackpool[%d]: %zu free bytes on the lists, %zu counted", o, free_bytes,
			    mp->stackpool[o].free_bytes);
		pthread_mutex_unlock(&mp->stackpool[o].mu);
	}
}

static void
mutex_fork_prepare(void *p)
{
	struct gostack__mutex_pools *mp = p;

	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++)
		pthread_mutex_lock(&mp->stackpool[o].mu);
	pthread_mutex_lock(&mp->stackLarge.lock);
}

static void
mutex_fork_parent(void *p)
{
	struct gostack__mutex_pools *mp = p;

	pthread_mutex_unlock(&mp->stackLarge.lock);
	for (int o = GOSTACK_NUM_ORDERS - 1; o >= 0; o--)
		pthread_mutex_unlock(&mp->stackpool[o].mu);
}

const struct gostack__pools_ops gostack__mutex_pools = {
	.kind = GOSTACK_BACKEND_MUTEX,
	.create = mutex_create,
	.destroy = mutex_destroy,
	.pool_get = mutex_pool_get,
	.pool_put = mutex_pool_put,
	.large_get = gostack__stackLarge_get,
	.large_put = gostack__stackLarge_put,
	.pooled_bytes = mutex_pooled_bytes,
	.release = mutex_release,
	.check = mutex_check,
	.fork_prepare = mutex_fork_prepare,
	.fork_parent = mutex_fork_parent,
};
