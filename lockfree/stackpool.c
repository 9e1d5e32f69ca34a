/*
 * lockfree/stackpool.c: Go's global stackpool[order] as one ck_stack of free
 * stacks per order, and the sweep that gives fully free spans back.
 *
 * Correctness argument
 * --------------------
 * Layout. Go keeps a list of spans per order and a free list inside each
 * span; a lock-free stack cannot unlink a span from the middle of a list, so
 * here the order's free stacks themselves are the nodes (linked through
 * their gclinks, in the stacks' top 16 bytes), whatever span they come from.
 * Refill pops Go's amount (16 KiB worth) with one generation-bumping DCAS
 * and release pushes its batch with one CAS (lfstack.c); Go's amounts are
 * unchanged. A new span is carved as Go carves it (the highest stack first)
 * and the stacks the caller does not take are pushed as one chain.
 *
 * No stack handed out twice: a stack is reachable only from the ck_stack
 * (or a thread's private array after a pop), or with the per-CPU tier from
 * one CPU's bin (percpu.c) or one transfer batch (transfer.c); pops are
 * generation-counted (ABA argument in lfstack.c); carving publishes a span's
 * stacks only after its links are written (the push's store fence and CAS).
 *
 * With the tier, a refill tries this CPU's bin, then a transfer batch (up
 * to 16 stacks a full bin sent), then the stacks' list; a release that
 * finds the bin full sends a batch of it first. A sweep drains the order's
 * batches together with its stacks, so they are counted like the others.
 *
 * Span reclamation (Go's allocCount / freeStackSpans). Go returns a span the
 * moment its allocCount reaches 0; here a span's free stacks are scattered
 * through the stack, so fully free spans are found by a sweep, Go's
 * freeStackSpans: the sweeper (one per order, under that order's sweep lock)
 * drains the whole stack with a generation-bumping DCAS, counts the drained
 * stacks per span, keeps out every span whose stacks are all there (16, 8, 4
 * or 2), pushes the others back and retires the kept-out spans. While
 * drained, the stacks belong to the sweeper alone: no other thread can pop
 * them, so counting needs no atomics and no allocCount is kept on the hot
 * path. A span whose every stack was in the drained list has no stack in use
 * or in any cache, so retiring it loses nothing. A concurrent refill that
 * finds the stack drained carves a new span: correct, merely one span more.
 *
 * Retirement: why no reader touches a span's memory after it is reused, and
 * why memory and mappings stay bounded. A retired span is off the pool (its
 * stacks drained and not pushed back) and its state is NONE (free() of one
 * of its stacks fails the checks at once). A pop that started before the
 * drain may still hold a pointer to one of its stacks and read the link
 * (lfstack.c); the retiring thread, after releasing the sweep lock, waits
 * for one grace period (rcu.c) for the whole batch, which ends every such
 * pop, and only then gives the spans to the heap (gostack__span_free), where
 * their memory may become anything, a guarded span included. A pop that
 * starts after the drain cannot reach them. The heap keeps the memory
 * mapped and committed (dirty, decayed like any freed span: mheap.c): no
 * hole is punched, no mapping is split or created, so /proc/self/maps does
 * not grow with retirements, and the retired memory is the first the heap
 * hands out again (buddy free lists are LIFO), before any fresh memory.
 * Sweeps run from reclaim (every order, with no idle requirement), from the
 * scavenger every decay_ms (only spans that were fully free at its previous
 * sweep too: idle_pass), and automatically before a refill carves a new
 * span once the order's spans exceed max(GOSTACK__LF_SWEEP_MIN, 2x what the
 * last sweep left): each waits for its grace period before it returns
 * (retiring is 0 again), so the memory is back in the heap by then.
 *
 * Stats: no shared counter is touched per push or pop (it would double the
 * contended atomic operations). carved[o] counts the bytes of the order's
 * live pool spans (updated when a span is carved or retired) and core counts
 * every stack it takes from or gives to a pool in per-thread counters, so
 * pooled = carved - (taken - given) * size (struct gostack__lf_pools), plus
 * the retiring bytes while a batch waits for its grace period.
 */
#include "lockfree.h"

/* The spans of a retired batch (linked through sweep_next, off every
 * pool) back to the heap once no reader can touch them: one grace period
 * for the whole batch. No gostack lock may be held but the decay lock
 * (lockfree.h). idle: they sat idle for decay_ms already. */
static void
release_retired(struct gostack__lf_pools *lp, struct gostack__span *list, bool idle)
{
	if (list == NULL)
		return;
	gostack__rcu_synchronize();
	while (list != NULL) {
		struct gostack__span *s = list;
		size_t bytes = gostack__span_stack_bytes(s);

		list = gostack__lf(s)->sweep_next;
		gostack__span_free(lp->a, s, idle);
		atomic_fetch_sub_explicit(&lp->retiring, bytes, memory_order_relaxed);
	}
}

/* Go's freeStackSpans for one order; caller holds sweep_lock[order].
 * Fully free spans are taken off the pool onto *retired (release_retired
 * gives them back after the caller dropped the lock). idle_pass != 0 (the
 * scavenger): a fully free span is retired only if the previous sweeping
 * pass (idle_pass - 1) found it fully free too. Returns the bytes retired. */
static size_t
sweep(struct gostack__lf_pools *lp, int order, struct gostack__span **retired, uint32_t idle_pass)
{
	struct gostack__lf_list *l = &lp->stackpool[order];
	struct gostack__gclink *x = (struct gostack__gclink *)gostack__lf_drain(&l->stack);
	ck_stack_entry_t *keep = NULL, *keep_last = NULL;
	struct gostack__span *touched = NULL;
	size_t retired_bytes = 0;

	x = gostack__lf_xfer_drain(lp, order, x);   /* the transfer batches' stacks too (transfer.c) */

	for (struct gostack__gclink *y = x; y != NULL; y = y->next) {
		struct gostack__span *s = gostack__span_of((uintptr_t)y);

		if (gostack__lf(s)->sweep_count++ == 0) {
			gostack__lf(s)->sweep_next = touched;
			touched = s;
		}
	}
	while (x != NULL) {
		struct gostack__gclink *nx = x->next;

		struct gostack__span *s = gostack__span_of((uintptr_t)x);

		if (gostack__lf(s)->sweep_count != s->nelems ||
		    (idle_pass != 0 && gostack__lf(s)->idle_pass != idle_pass - 1)) {
			/* kept, in the order drained: the stacks freed last stay on
			 * top (warm in cache, and what the next pop expects) */
			gostack__lf_chain_append(&keep, &keep_last, (ck_stack_entry_t *)x);
		}
		x = nx;
	}
	while (touched != NULL) {
		struct gostack__span *s = touched;
		bool free_span = gostack__lf(s)->sweep_count == s->nelems;

		touched = gostack__lf(s)->sweep_next;
		gostack__lf(s)->sweep_count = 0;
		if (free_span && idle_pass != 0 && gostack__lf(s)->idle_pass != idle_pass - 1) {
			gostack__lf(s)->idle_pass = idle_pass;   /* free now: retired next pass if still */
			free_span = false;
		}
		if (free_span) {
			size_t bytes = gostack__span_stack_bytes(s);

			/* free() of one of its stacks now fails its checks at once. */
			gostack__span_set_state(s, GOSTACK__SPAN_NONE);
			atomic_fetch_add_explicit(&lp->retiring, bytes, memory_order_relaxed);
			gostack__lf(s)->sweep_next = *retired;
			*retired = s;
			retired_bytes += bytes;
		}
	}
	if (keep != NULL)
		gostack__lf_push_chain(&l->stack, keep, keep_last);
	size_t left = atomic_fetch_sub_explicit(&lp->carved[order], retired_bytes, memory_order_relaxed) -
	    retired_bytes;

	atomic_store_explicit(&lp->carved_mark[order], left, memory_order_relaxed);
	return retired_bytes;
}

/* The automatic sweep of a refill (no gostack lock held); false when
 * another sweep of the order is running. */
static bool
maybe_sweep(struct gostack__lf_pools *lp, int order)
{
	struct gostack__span *retired = NULL;

	if (pthread_mutex_trylock(&lp->sweep_lock[order]) != 0)
		return false;
	sweep(lp, order, &retired, 0);
	pthread_mutex_unlock(&lp->sweep_lock[order]);
	release_retired(lp, retired, false);   /* carving below reuses it */
	return true;
}

/* Pop up to n stacks into out[], in a read section; how many. Their links
 * are read here, the one place a refill walks stack memory. */
static size_t
pop_into(struct gostack__lf_list *l, size_t n, struct gostack__gclink **out)
{
	struct gostack__gclink *m;
	size_t got;

	gostack__rcu_read_lock();
	m = (struct gostack__gclink *)gostack__lf_pop(&l->stack, n, &got);
	gostack__rcu_read_unlock();
	for (size_t i = 0; i < got; i++, m = m->next)
		out[i] = m;
	return got;
}

static size_t
lf_pool_get(void *p, int order, size_t n, struct gostack__gclink **out)
{
	struct gostack__lf_pools *lp = p;
	struct gostack__lf_list *l = &lp->stackpool[order];
	size_t size = gostack__order_size(order), got = 0;

	if (lp->pcpu != NULL) {   /* this CPU's bin first (percpu.c), then a transfer batch */
		got = gostack__pcpu_take(lp->pcpu, order, (void **)out, n);
		if (got < n)
			got += gostack__lf_xfer_get(lp, order, n - got, out + got);
		if (got == n)
			return got;
	}
	for (bool swept = false;; swept = true) {
		got += pop_into(l, n - got, out + got);
		if (got == n)
			return got;
		size_t carved = atomic_load_explicit(&lp->carved[order], memory_order_relaxed);

		/* The pool has doubled since the last sweep: give fully free
		 * spans back to the heap before carving another (the carve then
		 * reuses their memory), then look again. */
		if (swept || carved < GOSTACK__LF_SWEEP_MIN ||
		    carved < 2 * atomic_load_explicit(&lp->carved_mark[order], memory_order_relaxed) ||
		    !maybe_sweep(lp, order))
			break;
	}
	/* Carve a new span (Go's stackpoolalloc with an empty list). */
	struct gostack__span *s = gostack__span_alloc(lp->a, GOSTACK__SPAN_POOL, size);

	if (s == NULL)
		return got;   /* partial, or 0 with errno ENOMEM */
	s->order = (uint8_t)order;
	atomic_fetch_add_explicit(&lp->carved[order], gostack__span_stack_bytes(s), memory_order_relaxed);
	ck_stack_entry_t *rest = NULL, *rest_last = NULL;

	/* Highest stack first, as Go's carving hands them out. */
	for (uint32_t i = s->nelems; i != 0;) {
		struct gostack__gclink *x = gostack__link_of(gostack__span_stack(s, --i), size);

		gostack__link_mark_free(x);
		if (got < n)
			out[got++] = x;
		else
			gostack__lf_chain_append(&rest, &rest_last, (ck_stack_entry_t *)x);
	}
	if (rest != NULL)
		gostack__lf_push_chain(&l->stack, rest, rest_last);
	return got;
}

/* The n links in[] linked into one chain (the global pool's form). */
static void
push_global(struct gostack__lf_pools *lp, int order, struct gostack__gclink *const *in, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++)
		in[i]->next = in[i + 1];
	gostack__lf_push_chain(&lp->stackpool[order].stack, (ck_stack_entry_t *)in[0], (ck_stack_entry_t *)in[n - 1]);
}

static void
lf_pool_put(void *p, int order, struct gostack__gclink *const *in, size_t n)
{
	struct gostack__lf_pools *lp = p;

	if (lp->pcpu != NULL) {   /* this CPU's bin first (percpu.c) */
		size_t put = gostack__pcpu_give(lp->pcpu, order, (void *const *)in, n);

		/* The bin is full: a transfer batch of it goes to the global
		 * pool (transfer.c), making room for the rest. */
		if (put < n && gostack__lf_xfer_put(lp, order))
			put += gostack__pcpu_give(lp->pcpu, order, (void *const *)(in + put), n - put);
		if (put == n)
			return;
		in += put;
		n -= put;
	}
	push_global(lp, order, in, n);
}

/* A per-CPU bin drained (decay_lock held): a small order's stacks to its
 * global pool as one chain, a large class's spans to stackLarge. */
static void
put_global(void *p, int cls, void *const *items, uint32_t n)
{
	struct gostack__lf_pools *lp = p;

	if (cls >= GOSTACK_NUM_ORDERS) {
		for (uint32_t i = 0; i < n; i++)
			gostack__lf_large_put_global(lp, items[i]);
		return;
	}
	push_global(lp, cls, (struct gostack__gclink *const *)items, n);
}

static bool
lf_percpu_bytes(void *p, size_t *bytes)
{
	struct gostack__lf_pools *lp = p;

	if (lp->pcpu == NULL)
		return false;
	*bytes = gostack__pcpu_bytes(lp->pcpu, 0, GOSTACK__PCPU_CLASSES);
	return true;
}

static void *
lf_create(gostack_allocator_t *a)
{
	struct gostack__lf_pools *lp = gostack__meta_alloc(sizeof *lp);

	if (lp == NULL)
		return NULL;
	gostack__rcu_setup();
	lp->a = a;
	lp->decay_pass = 1;
	if (a->percpu)
		lp->pcpu = gostack__pcpu_create();   /* NULL: no rseq here (percpu.c) */
	gostack__lf_xfer_init(lp, lp->pcpu != NULL ? gostack__pcpu_ncpu(lp->pcpu) : 0);   /* transfer.c */
	for (int i = 0; i < GOSTACK_NUM_ORDERS; i++) {
		ck_stack_init(&lp->stackpool[i].stack);
		/* A non-NULL generation: ck's `generation + 1` on a NULL char *
		 * is undefined behaviour (UBSan says so). */
		lp->stackpool[i].stack.generation = (char *)(uintptr_t)GOSTACK__PAD;
		pthread_mutex_init(&lp->sweep_lock[i], NULL);
	}
	for (int i = 0; i < GOSTACK__LARGE_LISTS; i++) {
		ck_stack_init(&lp->stackLarge[i].stack);
		lp->stackLarge[i].stack.generation = (char *)(uintptr_t)GOSTACK__PAD;
	}
	return lp;
}

static size_t
lf_pooled_bytes(void *p, const struct gostack__tstat *sum, size_t per_class[GOSTACK_NUM_ORDERS + 1])
{
	struct gostack__lf_pools *lp = p;
	size_t n = atomic_load_explicit(&lp->large_bytes, memory_order_relaxed);

	if (lp->pcpu != NULL)   /* large spans in the per-CPU bins (small ones are in the flows below) */
		n += gostack__pcpu_bytes(lp->pcpu, GOSTACK_NUM_ORDERS, GOSTACK__PCPU_CLASSES);
	if (per_class != NULL)
		per_class[GOSTACK_NUM_ORDERS] = n;
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		uint64_t out = atomic_load_explicit(&sum->pool_out[o], memory_order_relaxed);
		uint64_t in = atomic_load_explicit(&sum->pool_in[o], memory_order_relaxed);
		size_t b = atomic_load_explicit(&lp->carved[o], memory_order_relaxed) -
		    (size_t)(out - in) * gostack__order_size(o);

		if (per_class != NULL)
			per_class[o] = b;
		n += b;
	}
	/* Retiring spans are still the allocator's (mapped) until the heap
	 * takes them: counted as pooled, in no order. */
	return n + atomic_load_explicit(&lp->retiring, memory_order_relaxed);
}

/* pools_ops.release: stackLarge's idle spans (no grace period needed:
 * stacklarge.c), then, when sweeping, each order's fully free spans (idle
 * for a pass already unless this is reclaim), released after one grace
 * period for the whole batch. */
static size_t
lf_release(void *p, uint64_t now, bool sweep_due)
{
	struct gostack__lf_pools *lp = p;
	struct gostack__span *retired = NULL;
	bool all = now == GOSTACK__RELEASE_ALL;

	/* Per-CPU bins that sat idle since the last look (all of them for
	 * reclaim) go to the global pools first, where the release finds
	 * them: large ones every pass, small ones when sweeping. */
	if (lp->pcpu != NULL)
		(void)gostack__pcpu_drain(lp->pcpu, all, GOSTACK_NUM_ORDERS, GOSTACK__PCPU_CLASSES, put_global, lp);
	size_t bytes = gostack__lf_large_release(lp, now);

	if (!sweep_due)
		return bytes;
	uint32_t pass = all ? 0 : ++lp->decay_pass;

	if (lp->pcpu != NULL)
		(void)gostack__pcpu_drain(lp->pcpu, all, 0, GOSTACK_NUM_ORDERS, put_global, lp);

	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		if (atomic_load_explicit(&lp->carved[o], memory_order_relaxed) == 0)
			continue;
		pthread_mutex_lock(&lp->sweep_lock[o]);
		bytes += sweep(lp, o, &retired, pass);
		pthread_mutex_unlock(&lp->sweep_lock[o]);
	}
	release_retired(lp, retired, !all);
	return bytes;
}

static void
lf_destroy(void *p)
{
	struct gostack__lf_pools *lp = p;

	lf_release(lp, GOSTACK__RELEASE_ALL, true);
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++)
		if (atomic_load_explicit(&lp->carved[o], memory_order_relaxed) != 0)
			gostack__throw("destroying lock-free pools with live spans of order %d", o);
	if (atomic_load_explicit(&lp->large_bytes, memory_order_relaxed) != 0)
		gostack__throw("destroying lock-free pools with stackLarge not empty");
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++)
		pthread_mutex_destroy(&lp->sweep_lock[o]);
	gostack__lf_xfer_destroy(lp);
	gostack__pcpu_destroy(lp->pcpu);
	gostack__meta_free(lp, sizeof *lp);
}

/* Debug mode: every free stack on each order's stack is a stack of a live
 * pool span of that order, and no span has more free stacks than it holds.
 * Drained (a generation-bumping DCAS: safe against concurrent pops) under
 * the sweep lock, checked, pushed back. */
static void
lf_check(void *p)
{
	struct gostack__lf_pools *lp = p;

	if (lp->pcpu != NULL)   /* the bins' stacks are checked on the global pools */
		(void)gostack__pcpu_drain(lp->pcpu, true, 0, GOSTACK__PCPU_CLASSES, put_global, lp);
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		size_t size = gostack__order_size(o);
		struct gostack__gclink *x, *last = NULL;
		struct gostack__span *touched = NULL;

		pthread_mutex_lock(&lp->sweep_lock[o]);
		x = (struct gostack__gclink *)gostack__lf_drain(&lp->stackpool[o].stack);
		x = gostack__lf_xfer_drain(lp, o, x);
		for (struct gostack__gclink *y = x; y != NULL; y = y->next) {
			struct gostack__span *s = gostack__span_of((uintptr_t)y);

			if (s == NULL || atomic_load_explicit(&s->state, memory_order_relaxed) != GOSTACK__SPAN_POOL ||
			    s->order != o || atomic_load_explicit(&s->alloc, memory_order_relaxed) != lp->a ||
			    gostack__span_index(s, gostack__link_lo(y, size)) == UINT32_MAX)
				gostack__throw("lock-free stackpool[%d]: %p is not a stack of a live span of this order",
				    o, (void *)y);
			if (gostack__lf(s)->sweep_count++ == 0) {
				gostack__lf(s)->sweep_next = touched;
				touched = s;
			}
			if (gostack__lf(s)->sweep_count > s->nelems)
				gostack__throw("lock-free stackpool[%d]: span %p has a stack on the pool twice", o,
				    (void *)s->base);
			last = y;
		}
		for (struct gostack__span *s = touched; s != NULL; s = gostack__lf(s)->sweep_next)
			gostack__lf(s)->sweep_count = 0;
		if (x != NULL)
			gostack__lf_push_chain(&lp->stackpool[o].stack, (ck_stack_entry_t *)x, (ck_stack_entry_t *)last);
		pthread_mutex_unlock(&lp->sweep_lock[o]);
	}
}

static void
lf_fork_prepare(void *p)
{
	struct gostack__lf_pools *lp = p;

	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++)
		pthread_mutex_lock(&lp->sweep_lock[o]);
	gostack__pcpu_fork_prepare(lp->pcpu);
}

static void
lf_fork_parent(void *p)
{
	struct gostack__lf_pools *lp = p;

	gostack__pcpu_fork_parent(lp->pcpu);
	for (int o = GOSTACK_NUM_ORDERS - 1; o >= 0; o--)
		pthread_mutex_unlock(&lp->sweep_lock[o]);
}

const struct gostack__pools_ops gostack__lockfree_pools = {
	.kind = GOSTACK_BACKEND_LOCKFREE,
	.create = lf_create,
	.destroy = lf_destroy,
	.pool_get = lf_pool_get,
	.pool_put = lf_pool_put,
	.large_get = gostack__lf_large_get,
	.large_put = gostack__lf_large_put,
	.pooled_bytes = lf_pooled_bytes,
	.release = lf_release,
	.check = lf_check,
	.percpu_bytes = lf_percpu_bytes,
	.fork_prepare = lf_fork_prepare,
	.fork_parent = lf_fork_parent,
	.global_fork_prepare = gostack__rcu_fork_prepare,
	.global_fork_parent = gostack__rcu_fork_parent,
	.global_fork_child = gostack__rcu_fork_child,
	.global_quiesce = gostack__rcu_quiesce,
};
