/*
 * lockfree/stacklarge.c: Go's stackLarge as one ck_stack per log2(npages).
 *
 * Correctness argument
 * --------------------
 * Nodes are the spans' out-of-line metadata (struct gostack__span, in the
 * arena's first units), never stack memory. A pop reads the head span's
 * link inside an RCU read section; the span may meanwhile be popped, used,
 * freed to the heap and even carved again, which rewrites its pool area
 * (the link included): the stale pop then reads a meaningless link and its
 * DCAS fails, because the span's pop bumped the generation (lfstack.c). The
 * read itself always hits mapped memory: span metadata is unmapped only with
 * its arena, which the engine detaches once it holds no span (so no list
 * holds a node in it) and unmaps after a grace period (core/pools.c,
 * rcu.c). The stack memory of a large span is never read through a list, so
 * a large span goes back to the heap (and its memory may be reused at once)
 * with no grace period: a burst of large stacks freed past the bound costs
 * what it costs the mutex pools, a heap free each. ABA: pops are
 * ck_stack_pop_mpmc (generation-counted DCAS) and drains bump the
 * generation too.
 *
 * The per-CPU tier (percpu.c) comes first: a get pops this CPU's bin of the
 * list, a put pushes onto it; only what the bin cannot give or take comes
 * here (large_get_global, large_put_global), and so do a drained bin's
 * spans.
 *
 * Bound: large_bytes (all lists) stays <= GOSTACK__LARGE_KEEP (64 MiB per
 * allocator, as with the mutex pools; the per-CPU bins are bounded on
 * their own): a free that would pass it reserves
 * nothing and gives the span to the heap instead. Release (reclaim, the
 * scavenger) drains each non-empty list, gives back the spans it has seen
 * there for decay_ms (decay_at, written by the put before its releasing push
 * and read after the draining DCAS; all of them for reclaim) and pushes the
 * rest back as one chain. Drained spans belong to the drainer alone, as
 * popped ones do; a get meanwhile finds the list empty and takes a span
 * from the heap: correct, one span more.
 */
#include "lockfree.h"

/* The ops' entries: the per-CPU tier first (percpu.c), which comes back
 * to the _global forms for what its bin cannot give or take; both calls
 * are tail calls. */
struct gostack__span *
gostack__lf_large_get(void *p, unsigned log2npages)
{
	struct gostack__lf_pools *lp = p;

	if (lp->pcpu != NULL)
		return gostack__pcpu_large_get(lp, log2npages);
	return gostack__lf_large_get_global(lp, log2npages);
}

void
gostack__lf_large_put(void *p, struct gostack__span *s)
{
	struct gostack__lf_pools *lp = p;

	if (lp->pcpu != NULL)
		gostack__pcpu_large_put(lp, s);
	else
		gostack__lf_large_put_global(lp, s);
}

/* Out of line, so that the entries above stay tail calls with no frame. */
__attribute__((noinline)) struct gostack__span *
gostack__lf_large_get_global(struct gostack__lf_pools *lp, unsigned log2npages)
{
	struct gostack__lf_list *l = &lp->stackLarge[log2npages];
	ck_stack_entry_t *e;
	size_t got;
	struct gostack__span *s;

	if (ck_pr_load_ptr(&l->stack.head) == NULL)
		return NULL;   /* empty: skip the read section */
	gostack__rcu_read_lock();
	e = gostack__lf_pop(&l->stack, 1, &got);
	gostack__rcu_read_unlock();
	if (e == NULL)
		return NULL;
	s = gostack__lf_span_of_entry(e);

	atomic_fetch_sub_explicit(&lp->large_bytes, gostack__span_stack_bytes(s), memory_order_relaxed);
	return s;
}

__attribute__((noinline)) void
gostack__lf_large_put_global(struct gostack__lf_pools *lp, struct gostack__span *s)
{
	size_t bytes = gostack__span_stack_bytes(s);
	struct gostack__lf_list *l = &lp->stackLarge[gostack__large_list(s)];

	/* The scavenger stamps it when it first sees it (no clock here);
	 * published with the span by the push's CAS. Reserve first, so that
	 * concurrent puts never keep more than the bound together. */
	s->decay_at = 0;
	if (atomic_fetch_add_explicit(&lp->large_bytes, bytes, memory_order_relaxed) + bytes >
	    GOSTACK__LARGE_KEEP) {
		atomic_fetch_sub_explicit(&lp->large_bytes, bytes, memory_order_relaxed);
		gostack__span_free(lp->a, s, false);
		return;
	}
	gostack__lf_push_chain(&l->stack, &gostack__lf(s)->entry, &gostack__lf(s)->entry);
}

size_t
gostack__lf_large_release(struct gostack__lf_pools *lp, uint64_t now)
{
	bool all = now == GOSTACK__RELEASE_ALL;
	size_t total = 0;

	for (int i = 0; i < GOSTACK__LARGE_LISTS; i++) {
		struct gostack__lf_list *l = &lp->stackLarge[i];

		if (ck_pr_load_ptr(&l->stack.head) == NULL)
			continue;
		ck_stack_entry_t *e = gostack__lf_drain(&l->stack), *keep = NULL, *keep_last = NULL;

		while (e != NULL) {
			ck_stack_entry_t *next = e->next;
			struct gostack__span *s = gostack__lf_span_of_entry(e);

			if (!all && s->decay_at == 0)
				s->decay_at = now + (uint64_t)lp->a->decay_ms;   /* first seen idle */
			if (all || s->decay_at <= now) {
				size_t bytes = gostack__span_stack_bytes(s);

				atomic_fetch_sub_explicit(&lp->large_bytes, bytes, memory_order_relaxed);
				total += bytes;
				gostack__span_free(lp->a, s, !all);
			} else {
				gostack__lf_chain_append(&keep, &keep_last, e);   /* kept in order */
			}
			e = next;
		}
		if (keep != NULL)
			gostack__lf_push_chain(&l->stack, keep, keep_last);
	}
	return total;
}
