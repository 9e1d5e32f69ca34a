/*
 * lockfree/transfer.c: transfer batches, the per-CPU tier's way to and from
 * the global pool when stacks flow between CPUs (tcmalloc's transfer
 * cache, made of ck_stacks). When a CPU's bin of an order is full, a
 * release takes up to GOSTACK__PCPU_XFER stacks out of it into a batch and
 * pushes the batch onto the order's list of full batches; when a bin runs
 * short, a refill pops a whole batch and puts what it does not hand out
 * into the bin. A batch is a descriptor holding an array of the stacks'
 * gclink pointers, so a transfer reads and writes no stack memory and moves
 * a batch with one push or pop, where the stacks' own list costs a DCAS per
 * refill and walks the links of stacks another CPU last wrote.
 *
 * Correctness argument
 * --------------------
 * Where a stack is. A free stack of the pool is in exactly one place: a
 * CPU's bin, the order's ck_stack of stacks (stackpool.c), a batch on the
 * order's full list, or a batch (or array) owned by the thread that popped
 * or is filling it. A batch holds its stacks from the moment the bin's
 * critical section commits their removal (percpu.c) until a refill moves
 * them on; nothing else reads its slots.
 *
 * Descriptors. A fixed set per allocator (GOSTACK__PCPU_XFER_BATCHES per
 * CPU, options.h), allocated with the pools and freed with them: a
 * descriptor's memory is never unmapped or reused while any list can hold
 * it, so a pop that reads a stale head's link needs no read section (unlike
 * the stacks' list, whose nodes live in spans that may be retired). ABA: a
 * descriptor goes from the free list to a full list and back many times;
 * every pop is ck_stack_pop_mpmc (generation-counted DCAS) and every drain
 * bumps the generation (lfstack.c), so a stale pop's DCAS fails. Pushes
 * publish a descriptor's slots with the push's store fence and CAS, and the
 * pop that takes it sees them (lfstack.c's ordering pairs).
 *
 * Sweeps (stackpool.c). The sweeper drains the order's full list as it
 * drains the stacks' list (a generation-bumping DCAS, under the order's
 * sweep lock) and counts the batches' stacks with the rest, so a span all of
 * whose stacks sit in batches is found free. A batch popped before the drain
 * belongs to its thread and its stacks to no sweep: their spans are not
 * counted free, which loses nothing. The drained batches' stacks become
 * one chain (the sweeper owns them), and their descriptors go back to the
 * free list. The spans retired from that chain are released after the
 * sweep's grace period, as before; no batch can name them: the only batches
 * that held them were drained.
 *
 * Bound: the batches hold at most GOSTACK__PCPU_XFER stacks each; stacks
 * in batches are the global pool's (counted as pooled by the same flows).
 * No free descriptor: the release pushes onto the stacks' list as before.
 *
 * ThreadSanitizer: a stack leaving a bin is acquired (percpu.c); a batch is
 * released by its push and acquired by its pop (lfstack.c), which carries
 * the stacks' happens-before along; a stack entering a bin is released.
 */
#include "lockfree.h"

_Static_assert(GOSTACK__PCPU_XFER >= 1 && GOSTACK__PCPU_XFER <= 16, "a batch moves in one critical section (percpu.c: 16)");

void
gostack__lf_xfer_init(struct gostack__lf_pools *lp, int ncpu)
{
	size_t n = (size_t)ncpu * GOSTACK__PCPU_XFER_BATCHES;
	struct gostack__lf_xfer *d;

	ck_stack_init(&lp->xfer_free.stack);
	lp->xfer_free.stack.generation = (char *)(uintptr_t)GOSTACK__PAD;   /* as lf_create's */
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		ck_stack_init(&lp->xfer_full[o].stack);
		lp->xfer_full[o].stack.generation = (char *)(uintptr_t)GOSTACK__PAD;
	}
	lp->xfer = NULL;
	lp->xfer_count = 0;
	if (n == 0 || (d = gostack__meta_alloc(n * sizeof *d)) == NULL)
		return;   /* no tier, or no memory: the tier runs without batches */
	lp->xfer = d;
	lp->xfer_count = n;
	for (size_t i = 0; i < n; i++)
		gostack__lf_push_chain(&lp->xfer_free.stack, &d[i].entry, &d[i].entry);
}

void
gostack__lf_xfer_destroy(struct gostack__lf_pools *lp)
{
	if (lp->xfer != NULL)
		gostack__meta_free(lp->xfer, lp->xfer_count * sizeof *lp->xfer);
	lp->xfer = NULL;
}

static inline struct gostack__lf_xfer *
xfer_pop(ck_stack_t *st)
{
	size_t got;
	ck_stack_entry_t *e = gostack__lf_pop(st, 1, &got);   /* descriptors: no read section (above) */

	return e == NULL ? NULL : (struct gostack__lf_xfer *)(void *)((char *)e - offsetof(struct gostack__lf_xfer, entry));
}

bool
gostack__lf_xfer_put(struct gostack__lf_pools *lp, int order)
{
	struct gostack__lf_xfer *d;

	if (lp->xfer == NULL || (d = xfer_pop(&lp->xfer_free.stack)) == NULL)
		return false;
	d->n = (uint32_t)gostack__pcpu_take(lp->pcpu, order, (void **)d->slot, GOSTACK__PCPU_XFER);
	if (d->n == 0) {   /* the bin was emptied meanwhile, or we moved: nothing to send */
		gostack__lf_push_chain(&lp->xfer_free.stack, &d->entry, &d->entry);
		return true;   /* room, most likely: the caller tries the bin again */
	}
	gostack__lf_push_chain(&lp->xfer_full[order].stack, &d->entry, &d->entry);
	return true;
}

size_t
gostack__lf_xfer_get(struct gostack__lf_pools *lp, int order, size_t n, struct gostack__gclink **out)
{
	struct gostack__lf_xfer *d;

	if (ck_pr_load_ptr(&lp->xfer_full[order].stack.head) == NULL || (d = xfer_pop(&lp->xfer_full[order].stack)) == NULL)
		return 0;
	uint32_t k = d->n, take = (uint32_t)(n < k ? n : k);

	for (uint32_t i = 0; i < take; i++)   /* the batch's last ones for the caller */
		out[i] = d->slot[--k];
	if (k != 0) {   /* the rest into this CPU's bin; what does not fit to the stacks' list */
		uint32_t put = (uint32_t)gostack__pcpu_give(lp->pcpu, order, (void *const *)d->slot, k);

		if (put < k) {
			for (uint32_t i = put; i + 1 < k; i++)
				d->slot[i]->next = d->slot[i + 1];
			gostack__lf_push_chain(&lp->stackpool[order].stack, (ck_stack_entry_t *)d->slot[put],
			    (ck_stack_entry_t *)d->slot[k - 1]);
		}
	}
	gostack__lf_push_chain(&lp->xfer_free.stack, &d->entry, &d->entry);
	return take;
}

struct gostack__gclink *
gostack__lf_xfer_drain(struct gostack__lf_pools *lp, int order, struct gostack__gclink *chain)
{
	ck_stack_entry_t *e = gostack__lf_drain(&lp->xfer_full[order].stack);

	while (e != NULL) {
		struct gostack__lf_xfer *d = (struct gostack__lf_xfer *)(void *)((char *)e - offsetof(struct gostack__lf_xfer, entry));

		tsan_acquire(e);
		e = e->next;
		for (uint32_t i = 0; i < d->n; i++) {
			d->slot[i]->next = chain;
			chain = d->slot[i];
		}
		d->n = 0;
		gostack__lf_push_chain(&lp->xfer_free.stack, &d->entry, &d->entry);
	}
	return chain;
}
