/*
 * lockfree/stacklarge.c: Go's stackLarge as one ck_stack per log2(npages).
 *
 * Correctness argument
 * --------------------
 * Nodes are the spans' out-of-line metadata (struct gostack__span, in the
 * arena's first units), never stack memory: a large stack's pages can be
 * given back without touching any link. A pop reads the head span's link
 * inside an RCU read section (the span may meanwhile be popped, used, freed
 * past the bound and released); span metadata is unmapped only with its
 * arena, after every span in it went back to the heap, and spans leave
 * through gostack__lf_retire (call_rcu) or reclaim's batched grace period,
 * so the read always hits mapped memory. ABA: pops are ck_stack_pop_mpmc
 * (generation-counted DCAS) and the drain bumps the generation too
 * (lfstack.c).
 *
 * Bound: large_bytes (all lists) stays <= GOSTACK__LARGE_KEEP (64 MiB per
 * allocator, as with the mutex pools): a free that would pass it reserves
 * nothing and retires the span instead. reclaim drains every list; the
 * scavenger (decay) drains each non-empty list, retires the spans it has
 * seen there for decay_ms (decay_at, written by the put before its releasing
 * push and read after the draining DCAS) and pushes the rest back as one
 * chain. Drained spans belong to the drainer alone, as popped ones do.
 */
#include "lockfree.h"

struct gostack__span *
gostack__lf_large_get(void *p, unsigned log2npages)
{
	struct gostack__lf_pools *lp = p;
	struct gostack__lf_list *l = &lp->stackLarge[log2npages];
	ck_stack_entry_t *e;
	size_t got;

	if (ck_pr_load_ptr(&l->stack.head) == NULL)
		return NULL;   /* empty: skip the read section */
	gostack__rcu_read_lock();
	e = gostack__lf_pop(&l->stack, 1, &got);
	gostack__rcu_read_unlock();
	if (e == NULL)
		return NULL;
	struct gostack__span *s = gostack__lf_span_of_entry(e);

	atomic_fetch_sub_explicit(&lp->large_bytes, gostack__span_stack_bytes(s), memory_order_relaxed);
	return s;
}

void
gostack__lf_large_put(void *p, struct gostack__span *s)
{
	struct gostack__lf_pools *lp = p;
	size_t bytes = gostack__span_stack_bytes(s);
	struct gostack__lf_list *l = &lp->stackLarge[gostack__large_list(s)];

	/* The scavenger stamps it when it first sees it (no clock here);
	 * published with the span by the push (release). */
	s->decay_at = 0;
	if (atomic_fetch_add_explicit(&lp->large_bytes, bytes, memory_order_relaxed) + bytes >
	    GOSTACK__LARGE_KEEP) {
		atomic_fetch_sub_explicit(&lp->large_bytes, bytes, memory_order_relaxed);
		gostack__lf_retire(lp->a, s, false, NULL);
		return;
	}
	gostack__lf_push_chain(&l->stack, &gostack__lf(s)->entry, &gostack__lf(s)->entry);
}

size_t
gostack__lf_large_drain(struct gostack__lf_pools *lp, struct gostack__span **batch)
{
	size_t total = 0;

	for (int i = 0; i < GOSTACK__LARGE_LISTS; i++) {
		struct gostack__lf_list *l = &lp->stackLarge[i];
		ck_stack_entry_t *e = gostack__lf_drain(&l->stack);

		while (e != NULL) {
			ck_stack_entry_t *next = e->next;
			struct gostack__span *s = gostack__lf_span_of_entry(e);
			size_t bytes = gostack__span_stack_bytes(s);

			atomic_fetch_sub_explicit(&lp->large_bytes, bytes, memory_order_relaxed);
			total += bytes;
			gostack__lf_retire(lp->a, s, true, batch);
			e = next;
		}
	}
	return total;
}

size_t
gostack__lf_large_decay(struct gostack__lf_pools *lp, uint64_t now)
{
	size_t total = 0;

	for (int i = 0; i < GOSTACK__LARGE_LISTS; i++) {
		struct gostack__lf_list *l = &lp->stackLarge[i];

		if (ck_pr_load_ptr(&l->stack.head) == NULL)
			continue;
		/* Drained, the spans are ours alone (as in reclaim); the young
		 * ones go back as one chain. A get meanwhile finds the list
		 * empty and takes a new span: correct, one span more. */
		ck_stack_entry_t *e = gostack__lf_drain(&l->stack), *keep = NULL, *keep_last = NULL;

		while (e != NULL) {
			ck_stack_entry_t *next = e->next;
			struct gostack__span *s = gostack__lf_span_of_entry(e);

			if (s->decay_at == 0)
				s->decay_at = now + (uint64_t)lp->a->decay_ms;   /* first seen idle */
			if (s->decay_at <= now) {
				size_t bytes = gostack__span_stack_bytes(s);

				atomic_fetch_sub_explicit(&lp->large_bytes, bytes, memory_order_relaxed);
				total += bytes;
				gostack__lf_retire(lp->a, s, false, NULL);
			} else {
				e->next = keep;
				keep = e;
				if (keep_last == NULL)
					keep_last = e;
			}
			e = next;
		}
		if (keep != NULL)
			gostack__lf_push_chain(&l->stack, keep, keep_last);
	}
	return total;
}
