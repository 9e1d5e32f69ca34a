/*
 * lfstack.c: the only code that touches a ck_stack. Every other file goes
 * through these three functions (pop, chain push, drain).
 *
 * Correctness argument
 * --------------------
 * Nodes are free stacks (their first word is the ck_stack_entry, the same
 * word Go's gclink uses), for stackLarge span metadata, or transfer batch
 * descriptors (transfer.c). A node popped
 * here is handed out and may be pushed straight back by its next owner, with
 * no grace period in between: that is the pool's whole point.
 *
 * ABA. A pop that read {head = A, generation = g} and A->next = B, then
 * stalled while A was popped, B was popped and A was pushed back, must not
 * install B (now owned by someone else). Every pop here replaces
 * {head, generation} with a double-width CAS that also writes generation + 1
 * (ck_stack_pop_mpmc, and the batch pop and drain below); pushes leave the
 * generation alone. Any pop in between therefore changes the generation and
 * the stale CAS fails, whatever head looks like. ck 0.7.1's
 * ck_stack_batch_pop_mpmc swaps head to NULL without bumping the generation,
 * which re-opens exactly this window; it is not used (gostack__lf_drain is
 * the generation-bumping replacement).
 *
 * Batch pop. gostack__lf_pop(n > 1) walks n links from the head before one
 * DCAS. A link read from a node that another thread has already popped may
 * be anything (the new owner writes its stack), so a link is followed only
 * after re-reading the generation and finding it unchanged: then no pop has
 * happened since the snapshot, the node is still on the stack, and its link
 * (which only changes when a node is popped and pushed again) is a real
 * node or NULL. If {head, generation} is unchanged at the DCAS, no pop
 * happened and no push did either (a push changes head, and head could only
 * come back through a pop), so the whole chain is still the top n nodes.
 *
 * Ordering (x86-64 is TSO; the ck fences below are compiler barriers there
 * and real barriers elsewhere). Push: the node's link is stored, then
 * ck_pr_fence_store, then the CAS publishes it (a locked instruction, a full
 * barrier): whoever pops the node sees its link and everything its last
 * owner wrote. Pop: head is loaded, ck_pr_fence_load, then the link; the
 * generation is loaded before head (as in ck_stack_pop_mpmc) so a pop that
 * slips between the two loads is caught by the generation check or the
 * DCAS. Pairs: lf_push_chain's CAS with the DCAS of lf_pop / lf_drain.
 *
 * Memory. Reading a link dereferences a node that may have been popped and
 * whose span may since have been retired. Every caller of gostack__lf_pop
 * on a list of stacks or spans holds an RCU read-side section
 * (gostack__rcu_read_lock) across the call (transfer.c's descriptors are
 * never freed while a list can hold them, so their pops need none),
 * and a retired pool span's memory is reused, and an arena's metadata
 * (where stackLarge's links live) unmapped, only after a grace period
 * (stackpool.c, core/pools.c), so the read hits memory that is still what
 * it was when the node was reachable. Pushes and drains dereference no node
 * other than their own and need no read section.
 *
 * ThreadSanitizer cannot see ck's inline-assembly atomics. In TSan builds
 * each push releases and each pop acquires the node's address, so stacks
 * handed between threads through a pool carry a happens-before edge; the
 * racy-by-design stale link reads stay inside gostack__lf_pop and are
 * suppressed there by name (tests/tsan.supp).
 */
#include <sched.h>
#include <stdlib.h>

#include "lockfree.h"


#ifdef GOSTACK_TEST_HOOKS
/* Test builds only: widen the windows of a batch pop (after it loads the
 * head, before it dereferences it; before its CAS) with a sched_yield() one
 * time in GOSTACK_TEST_YIELD (the options table's test-only row). */
static __thread uint64_t test_rng;

void
gostack__lf_test_window(void)
{
	long long e = gostack__opt(GOSTACK__OPT_TEST_YIELD);   /* options.c */

	if (e <= 0)
		return;
	if (test_rng == 0)
		test_rng = (uint64_t)pthread_self() | 1;
	test_rng = test_rng * 6364136223846793005ull + 1442695040888963407ull;
	if ((test_rng >> 33) % (uint64_t)e == 0)
		sched_yield();
}
#endif
#define test_window() gostack__lf_test_window()

__attribute__((noinline)) ck_stack_entry_t *
gostack__lf_pop(ck_stack_t *st, size_t n, size_t *got)
{
	struct ck_stack orig, upd;
	ck_stack_entry_t *last, *next;
	size_t k;

	if (n == 1) {
#ifdef GOSTACK_TEST_UNSAFE_POP
		ck_stack_entry_t *e = ck_stack_pop_upmc(st);   /* test only: ABA-prone */
#else
		ck_stack_entry_t *e = ck_stack_pop_mpmc(st);
#endif
		if (e != NULL) {
			tsan_acquire(e);
			e->next = NULL;
		}
		*got = e != NULL;
		return e;
	}
reload:
	orig.generation = ck_pr_load_ptr(&st->generation);
	ck_pr_fence_load();
	orig.head = ck_pr_load_ptr(&st->head);
	for (;;) {
		if (orig.head == NULL) {
			*got = 0;
			return NULL;
		}
		last = orig.head;
		k = 1;
		test_window();   /* a reader holding a node that a sweep may retire */
		ck_pr_fence_load();
		next = ck_pr_load_ptr(&last->next);
		while (k < n && next != NULL) {
			/* Follow `next` only if no pop happened since the snapshot. */
			ck_pr_fence_load();
			if (ck_pr_load_ptr(&st->generation) != orig.generation)
				goto reload;
			last = next;
			k++;
			ck_pr_fence_load();
			next = ck_pr_load_ptr(&last->next);
		}
		test_window();   /* a stale snapshot meeting a popped-and-pushed head */
#ifdef GOSTACK_TEST_UNSAFE_POP
		/* Test only: a single-width CAS on head, as ck_stack_pop_upmc
		 * does (the walk above is still validated: only the CAS is unsafe). */
		if (ck_pr_cas_ptr(&st->head, orig.head, next)) {
			ck_pr_inc_ptr(&st->generation);   /* keep other walks' validation meaningful */
			break;
		}
		goto reload;
#else
		upd.head = next;
		upd.generation = orig.generation + 1;
		if (ck_pr_cas_ptr_2_value(st, &orig, &upd, &orig))
			break;
#endif
	}
	last->next = NULL;
#ifdef LF_TSAN
	for (ck_stack_entry_t *e = orig.head; e != NULL; e = e->next)
		tsan_acquire(e);
#endif
	*got = k;
	return orig.head;
}

__attribute__((noinline)) void
gostack__lf_push_chain(ck_stack_t *st, ck_stack_entry_t *first, ck_stack_entry_t *last)
{
	ck_stack_entry_t *head;

#ifdef LF_TSAN
	for (ck_stack_entry_t *e = first; ; e = e->next) {
		tsan_release(e);
		if (e == last)
			break;
	}
#endif
	head = ck_pr_load_ptr(&st->head);
	ck_pr_store_ptr(&last->next, head);
	ck_pr_fence_store();
	while (!ck_pr_cas_ptr_value(&st->head, head, first, &head)) {
		ck_pr_store_ptr(&last->next, head);
		ck_pr_fence_store();
	}
}

__attribute__((noinline)) ck_stack_entry_t *
gostack__lf_drain(ck_stack_t *st)
{
	struct ck_stack orig, upd;

	orig.generation = ck_pr_load_ptr(&st->generation);
	ck_pr_fence_load();
	orig.head = ck_pr_load_ptr(&st->head);
	do {
		if (orig.head == NULL)
			return NULL;
		upd.head = NULL;
		upd.generation = orig.generation + 1;
	} while (!ck_pr_cas_ptr_2_value(st, &orig, &upd, &orig));
#ifdef LF_TSAN
	/* Stop at a link that is not gostack memory: a corrupted list is the
	 * debug check's to report (lf_check), not this loop's to crash on. */
	for (ck_stack_entry_t *e = orig.head; e != NULL && gostack__span_of((uintptr_t)e) != NULL; e = e->next)
		tsan_acquire(e);
#endif
	return orig.head;
}
