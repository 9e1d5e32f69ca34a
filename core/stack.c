/*
 * stack.c: Go's stackalloc and stackfree, with the checks that catch a bad
 * free at the call.
 *
 * Small stacks (< 32 KiB): the calling thread's cache, a list pop or push
 * with no atomic RMW, no lock and no syscall (refill and release move half a
 * cache to or from the global pool). Go's stackNoCache, a thread without a
 * cache slot or an exiting thread go to the global pool directly.
 * Large stacks (>= 32 KiB): stackLarge, then the heap.
 */
#include "pools.h"

static inline struct gostack__tcache *
tcache_of(gostack_allocator_t *a)
{
	struct gostack__tcache *t = gostack__tls.slot[a->slot];

	if (gostack__likely(t != NULL && atomic_load_explicit(&t->id, memory_order_relaxed) == a->id))
		return t;
	return gostack__tcache_slow(a);
}

static gostack_t
fail(int err)
{
	errno = err;
	return (gostack_t){ 0, 0 };
}

static gostack_t
stackalloc_large(gostack_allocator_t *a, size_t n)
{
	unsigned log2npage = gostack__stacklog2(n >> GOSTACK__PAGE_SHIFT);
	struct gostack__span *s = a->ops->large_get(a->pools, log2npage);
	struct gostack__tcache *t;

	if (s == NULL) {
		s = gostack__span_alloc(a, n, GOSTACK__SPAN_LARGE, n);
		if (s == NULL)
			return fail(ENOMEM);
	}
	t = tcache_of(a);
	if (t != NULL) {
		gostack__count(&t->st.large_allocs, 1);
		gostack__count(&t->st.large_alloc_bytes, n);
	} else {
		gostack__count_shared(&a->orphan.large_allocs, 1);
		gostack__count_shared(&a->orphan.large_alloc_bytes, n);
	}
	return (gostack_t){ s->base, s->base + n };
}

static gostack_t
stackalloc_nocache(gostack_allocator_t *a, struct gostack__tcache *t, int order, size_t n)
{
	struct gostack__gclink *x;

	if (a->ops->pool_get(a->pools, order, 1, &x) == 0)
		return fail(ENOMEM);
	if (t != NULL)
		gostack__count(&t->st.allocs[order], 1);
	else
		gostack__count_shared(&a->orphan.allocs[order], 1);
	return (gostack_t){ (uintptr_t)x, (uintptr_t)x + n };
}

gostack_t
gostack_allocator_alloc(gostack_allocator_t *a, size_t size)
{
	if (gostack__unlikely(a == NULL))
		return fail(EINVAL);
	if (gostack__unlikely(size - 1 >= GOSTACK_MAX_SIZE))   /* 0 wraps */
		return fail(EINVAL);
	size_t n = gostack__round2(size);

	if (gostack__unlikely(!gostack__is_small(n)))
		return stackalloc_large(a, n);

	int order = gostack__order(n);
	struct gostack__tcache *t = tcache_of(a);

	if (gostack__unlikely(t == NULL || a->no_cache))
		return stackalloc_nocache(a, t, order, n);

	struct gostack__stackfreelist *c = &t->stackcache[order];
	struct gostack__gclink *x = c->list;

	if (gostack__unlikely(x == NULL)) {
		if (!gostack__stackcacherefill(t, order))
			return fail(ENOMEM);
		x = c->list;
	}
	c->list = x->next;
	atomic_store_explicit(&c->size, atomic_load_explicit(&c->size, memory_order_relaxed) - n,
	    memory_order_relaxed);
	gostack__count(&t->st.allocs[order], 1);
	return (gostack_t){ (uintptr_t)x, (uintptr_t)x + n };
}

static _Noreturn void
bad_free(gostack_t stk, const char *why)
{
	gostack__throw("bad free of stack [%#lx, %#lx): %s", (unsigned long)stk.lo,
	    (unsigned long)stk.hi, why);
}

/*
 * The span of a stack being freed, or a throw naming the problem. Reads only
 * gostack's metadata (the arena table and span array), never the stack.
 */
static struct gostack__span *
check_free(gostack_allocator_t *a, gostack_t stk, size_t n)
{
	if (gostack__unlikely(stk.hi <= stk.lo || !gostack__is_pow2(n) ||
	    n < GOSTACK_MIN_SIZE || n > GOSTACK_MAX_SIZE))
		bad_free(stk, "size is not a power of two between 2 KiB and 1 GiB");
	if (gostack__unlikely((stk.lo & ((n < GOSTACK__SPAN_SIZE ? n : GOSTACK__SPAN_SIZE) - 1)) != 0))
		bad_free(stk, "misaligned lo");
	struct gostack__span *s = gostack__span_of(stk.lo);

	if (gostack__unlikely(s == NULL))
		bad_free(stk, "not memory gostack allocated (heap, C stack or foreign)");
	uint8_t state = atomic_load_explicit(&s->state, memory_order_relaxed);
	gostack_allocator_t *owner = atomic_load_explicit(&s->alloc, memory_order_relaxed);
	size_t elemsize = atomic_load_explicit(&s->elemsize, memory_order_relaxed);

	if (gostack__unlikely(state != GOSTACK__SPAN_POOL && state != GOSTACK__SPAN_LARGE))
		bad_free(stk, "not a stack handed out by gostack (free or interior memory)");
	if (gostack__unlikely(owner != a))
		bad_free(stk, "belongs to another allocator");
	if (gostack__unlikely(elemsize != n))
		bad_free(stk, "size does not match the stack handed out");
	if (gostack__unlikely(state == GOSTACK__SPAN_LARGE && s->base != stk.lo))
		bad_free(stk, "lo is not the start of a large stack");
	return s;
}

void
gostack_allocator_free(gostack_allocator_t *a, gostack_t stk)
{
	if (stk.lo == 0 && stk.hi == 0)
		return;
	if (gostack__unlikely(a == NULL))
		bad_free(stk, "NULL allocator");
	size_t n = stk.hi - stk.lo;
	struct gostack__span *s = check_free(a, stk, n);
	struct gostack__tcache *t;

	if (gostack__unlikely(!gostack__is_small(n))) {
		t = tcache_of(a);
		if (t != NULL) {
			gostack__count(&t->st.large_frees, 1);
			gostack__count(&t->st.large_free_bytes, n);
		} else {
			gostack__count_shared(&a->orphan.large_frees, 1);
			gostack__count_shared(&a->orphan.large_free_bytes, n);
		}
		a->ops->large_put(a->pools, s);
		return;
	}
	int order = gostack__order(n);
	struct gostack__gclink *x = (struct gostack__gclink *)stk.lo;

	t = tcache_of(a);
	if (gostack__unlikely(t == NULL || a->no_cache)) {
		if (t != NULL)
			gostack__count(&t->st.frees[order], 1);
		else
			gostack__count_shared(&a->orphan.frees[order], 1);
		x->next = NULL;
		a->ops->pool_put(a->pools, order, x, 1);
		return;
	}
	struct gostack__stackfreelist *c = &t->stackcache[order];

	if (atomic_load_explicit(&c->size, memory_order_relaxed) >= GOSTACK_CACHE_SIZE)
		gostack__stackcacherelease(t, order);   /* before the push, as in Go */
	x->next = c->list;
	c->list = x;
	atomic_store_explicit(&c->size, atomic_load_explicit(&c->size, memory_order_relaxed) + n,
	    memory_order_relaxed);
	gostack__count(&t->st.frees[order], 1);
}
