/*
 * stackcache.c: Go's per-P stack cache (mcache.stackcache), kept per thread
 * and per allocator: stackcacherefill, stackcacherelease, stackcache_clear,
 * and the life cycle of a thread's caches.
 *
 * The caches belong to threads gostack does not create. A thread gets its
 * cache for an allocator on its first call (gostack__tcache_slow), found
 * afterwards through initial-exec TLS. A pthread key destructor gives every
 * cache back to the pools when the thread exits (Go's freemcache); after that
 * the thread runs uncached, like Go's M with no P.
 */
#include <string.h>

#include "pools.h"

struct gostack__tcache gostack__tcache_none;
__thread struct gostack__tls gostack__tls __attribute__((tls_model("initial-exec"))) = {
	.slot = { [0 ... GOSTACK__SLOTS] = &gostack__tcache_none },
};
pthread_mutex_t gostack__registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t tls_key;

void
gostack__tstat_add(struct gostack__tstat *dst, const struct gostack__tstat *src)
{
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		gostack__count_shared(&dst->allocs[o], atomic_load_explicit(&src->allocs[o], memory_order_relaxed));
		gostack__count_shared(&dst->frees[o], atomic_load_explicit(&src->frees[o], memory_order_relaxed));
		gostack__count_shared(&dst->pool_out[o], atomic_load_explicit(&src->pool_out[o], memory_order_relaxed));
		gostack__count_shared(&dst->pool_in[o], atomic_load_explicit(&src->pool_in[o], memory_order_relaxed));
	}
	gostack__count_shared(&dst->large_allocs, atomic_load_explicit(&src->large_allocs, memory_order_relaxed));
	gostack__count_shared(&dst->large_frees, atomic_load_explicit(&src->large_frees, memory_order_relaxed));
	gostack__count_shared(&dst->large_alloc_bytes,
	    atomic_load_explicit(&src->large_alloc_bytes, memory_order_relaxed));
	gostack__count_shared(&dst->large_free_bytes,
	    atomic_load_explicit(&src->large_free_bytes, memory_order_relaxed));
}

/* Go's stackcacherefill: an empty list takes _StackCacheSize/2 from the pool. */
bool
gostack__stackcacherefill(struct gostack__tcache *t, int order)
{
	gostack_allocator_t *a = t->alloc;
	size_t got = a->ops->pool_get(a->pools, order, GOSTACK__CACHE_HALF(order), t->slot[order]);

	gostack__scavenger_poke();   /* no lock held here */
	if (got == 0)
		return false;
	gostack__count(&t->st.pool_out[order], got);
	if (a->debug)
		for (size_t i = 0; i < got; i++)
			gostack__debug_cache_link(t->slot[order][i]);
	atomic_store_explicit(&t->stackcache[order].n, (uint32_t)got, memory_order_relaxed);
	return true;
}

/* Go's stackcacherelease: a full list gives stacks back down to half, the
 * most recently pushed first (Go's walk from the head of its list). */
void
gostack__stackcacherelease(struct gostack__tcache *t, int order)
{
	gostack_allocator_t *a = t->alloc;
	struct gostack__stackfreelist *c = &t->stackcache[order];
	uint32_t have = atomic_load_explicit(&c->n, memory_order_relaxed);
	uint32_t keep = GOSTACK__CACHE_HALF(order);

	if (have <= keep)
		return;
	atomic_store_explicit(&c->n, keep, memory_order_relaxed);
	gostack__count(&t->st.pool_in[order], have - keep);
	a->ops->pool_put(a->pools, order, t->slot[order] + keep, have - keep);
	gostack__scavenger_note(a);
}

/* Go's stackcache_clear: every order of this cache back to the pools, and
 * the profile's reserve with them. The count says which slots hold stacks:
 * a fork child adopting the cache of a thread that was in the middle of a
 * push finds the pushed stack in the slot past the count, and leaves it
 * there, counted as in use (its free was not counted yet), as a stack the
 * dead thread held; one in the middle of a pop has taken its stack off the
 * count already. */
void
gostack__stackcache_clear(struct gostack__tcache *t)
{
	gostack_allocator_t *a = t->alloc;

	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		struct gostack__stackfreelist *c = &t->stackcache[o];
		uint32_t n = atomic_load_explicit(&c->n, memory_order_relaxed);
		struct gostack__gclink *r;

		if (n > GOSTACK__CACHE_SLOTS(o))
			gostack__throw("thread cache %p: order %d holds %u stacks", (void *)t, o, n);
		atomic_store_explicit(&c->n, 0, memory_order_relaxed);
		if ((r = atomic_load_explicit(&t->prof_clean[o], memory_order_relaxed)) != NULL) {
			atomic_store_explicit(&t->prof_clean[o], NULL, memory_order_relaxed);
			gostack__count(&t->st.pool_in[o], 1);
			a->ops->pool_put(a->pools, o, &r, 1);   /* the profile's reserve */
			gostack__scavenger_note(a);
		}
		if (n != 0) {
			gostack__count(&t->st.pool_in[o], n);
			a->ops->pool_put(a->pools, o, t->slot[o], n);
			gostack__scavenger_note(a);
		}
	}
}

void
gostack__tcache_retire(struct gostack__tcache *t)
{
	gostack_allocator_t *a = t->alloc;

	gostack__stackcache_clear(t);
	gostack__tstat_add(&a->dead, &t->st);
	memset(&t->st, 0, sizeof t->st);
	LIST_REMOVE(t, link);
	atomic_store_explicit(&t->id, 0, memory_order_relaxed);
	t->alloc = NULL;
}

/* Thread exit (Go's freemcache): every cache of this thread back to its pools. */
static void
tls_destructor(void *arg)
{
	struct gostack__tls *tls = arg;

	gostack__deferred_run();   /* into the caches, before they go */
	tls->state = GOSTACK__TLS_EXITING;
	pthread_mutex_lock(&gostack__registry_lock);
	for (int i = 0; i < GOSTACK__SLOTS; i++) {
		struct gostack__tcache *t = tls->slot[i];

		if (t == &gostack__tcache_none)
			continue;
		if (atomic_load_explicit(&t->id, memory_order_relaxed) != 0)
			gostack__tcache_retire(t);
		tls->slot[i] = &gostack__tcache_none;
		gostack__meta_free(t, sizeof *t);
	}
	pthread_mutex_unlock(&gostack__registry_lock);
	gostack__scavenger_poke();   /* the caches went to the pools */
}

void
gostack__tls_key_init(void)
{
	if (pthread_key_create(&tls_key, tls_destructor) != 0)
		gostack__throw("pthread_key_create failed");
}

bool
gostack__tls_register(void)
{
	struct gostack__tls *tls = &gostack__tls;

	if (tls->state == GOSTACK__TLS_FRESH) {
		if (pthread_setspecific(tls_key, tls) != 0)
			return false;
		tls->state = GOSTACK__TLS_LIVE;
	}
	return tls->state == GOSTACK__TLS_LIVE;
}

struct gostack__tcache *
gostack__tcache_slow(gostack_allocator_t *a)
{
	struct gostack__tls *tls = &gostack__tls;
	struct gostack__tcache *t;

	if (a->slot >= GOSTACK__SLOTS || !gostack__tls_register())
		return NULL;
	pthread_mutex_lock(&gostack__registry_lock);
	t = tls->slot[a->slot];
	if (atomic_load_explicit(&t->id, memory_order_relaxed) == a->id) {
		pthread_mutex_unlock(&gostack__registry_lock);
		return t;
	}
	if (t == &gostack__tcache_none) {
		t = gostack__meta_alloc(sizeof *t);
		if (t == NULL) {
			pthread_mutex_unlock(&gostack__registry_lock);
			return NULL;
		}
		t->owner = tls;
		tls->slot[a->slot] = t;
	} else if (atomic_load_explicit(&t->id, memory_order_relaxed) != 0) {
		gostack__throw("thread cache %p of a live allocator in a reused slot", (void *)t);
	}
	/* A fresh or orphaned struct: its lists are empty, its counters zero;
	 * the sampling countdown starts afresh for a's profile. */
	t->alloc = a;
	t->prof_left = 0;
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++)
		t->stackcache[o].cap = GOSTACK__CACHE_SLOTS(o);
	LIST_INSERT_HEAD(&a->tcaches, t, link);
	atomic_store_explicit(&t->id, a->id, memory_order_relaxed);
	pthread_mutex_unlock(&gostack__registry_lock);
	return t;
}

void
gostack_thread_flush(void)
{
	struct gostack__tls *tls = &gostack__tls;

	gostack__deferred_run();
	pthread_mutex_lock(&gostack__registry_lock);
	for (int i = 0; i < GOSTACK__SLOTS; i++) {
		struct gostack__tcache *t = tls->slot[i];

		if (atomic_load_explicit(&t->id, memory_order_relaxed) != 0) {   /* not none, not orphaned */
			if (t->alloc->debug)
				gostack__debug_check_tcache(t);
			gostack__stackcache_clear(t);
		}
	}
	pthread_mutex_unlock(&gostack__registry_lock);
	gostack__scavenger_poke();
}

/*
 * Fork child: only the forking thread survives. The caches of every other
 * thread are adopted: their stacks go back to the pools and their counters
 * to the allocator, as if those threads had exited (glibc's nptl does the
 * same for the stacks of threads that no longer exist).
 */
void
gostack__tcache_fork_child(void)
{
	pthread_mutex_lock(&gostack__registry_lock);
	gostack_allocator_t *a;

	LIST_FOREACH(a, &gostack__allocators, link) {
		struct gostack__tcache *t = LIST_FIRST(&a->tcaches);

		while (t != NULL) {
			struct gostack__tcache *next = LIST_NEXT(t, link);

			if (t->owner != &gostack__tls) {
				gostack__tcache_retire(t);
				gostack__meta_free(t, sizeof *t);
			}
			t = next;
		}
	}
	pthread_mutex_unlock(&gostack__registry_lock);
}
