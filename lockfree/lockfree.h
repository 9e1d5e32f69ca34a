/*
 * The lock-free global pools: Go's stackpool[order] and stackLarge rebuilt
 * as ConcurrencyKit lock-free stacks, span memory unmapped only after a
 * liburcu (urcu-bp) grace period.
 *
 *   lfstack.c     the only calls into ck_stack: pop, batch pop, chain push,
 *                 drain (each names its ABA and ordering argument)
 *   rcu.c         the only calls into liburcu: read sections, deferred
 *                 release, grace periods, fork and thread hooks
 *   stackpool.c   stackpool[order]: refill/release batches, the sweep that
 *                 retires fully free spans
 *   stacklarge.c  stackLarge[log2(npages)]
 *
 * Only ck_stack_pop_mpmc / ck_stack_trypop_mpmc and this directory's own
 * generation-bumping batch pop and drain are used to pop: all bump the
 * generation with a double-width CAS, so a node popped and pushed straight
 * back never lets a stale snapshot succeed (no ABA). ck 0.7.1's
 * ck_stack_batch_pop_mpmc does not bump the generation and is never used.
 */
#ifndef GOSTACK_LOCKFREE_H
#define GOSTACK_LOCKFREE_H

#include <ck_stack.h>
#include <urcu/call-rcu.h>

#include "../core/pools.h"

/*
 * ThreadSanitizer cannot see ck's inline-assembly atomics nor liburcu's
 * queues: in TSan builds, a thread that hands a node (a stack, a span) to
 * another through them releases its address, and the receiver acquires it.
 */
#if defined(__SANITIZE_THREAD__)
#define LF_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LF_TSAN 1
#endif
#endif
#ifdef LF_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define tsan_acquire(p) __tsan_acquire(p)
#define tsan_release(p) __tsan_release(p)
#else
#define tsan_acquire(p) ((void)(p))
#define tsan_release(p) ((void)(p))
#endif

#ifndef CK_F_STACK_POP_MPMC
#error "gostack's lock-free pools need ck_stack_pop_mpmc (double-width CAS); build with GOSTACK_LOCKFREE=OFF"
#endif

/*
 * The backend-private area of a span (struct gostack__span.backend).
 * rcu:         the deferred release of the span (call_rcu).
 * entry:       stackLarge's link (large spans are linked through their
 *              out-of-line metadata, never through stack memory).
 * sweep_next, sweep_count, idle_pass: the sweeper's, only under that
 *              order's sweep lock.
 */
struct gostack__lf_span {
	struct rcu_head rcu;
	ck_stack_entry_t entry;
	struct gostack__span *sweep_next;
	uint32_t sweep_count;
	uint32_t idle_pass;   /* the scavenger's sweeping pass that last found the span all free */
};
_Static_assert(sizeof(struct gostack__lf_span) <= sizeof(((struct gostack__span *)0)->backend),
    "lock-free span fields do not fit the span's backend area");

static inline struct gostack__lf_span *
gostack__lf(struct gostack__span *s)
{
	return (struct gostack__lf_span *)(void *)s->backend;
}

static inline struct gostack__span *
gostack__lf_span_of_entry(ck_stack_entry_t *e)
{
	return (struct gostack__span *)(void *)((char *)e - offsetof(struct gostack__lf_span, entry) -
	    offsetof(struct gostack__span, backend));
}

/*
 * One lock-free stack. The head is 16-byte aligned (cmpxchg16b faults
 * otherwise) and alone on its own 128-byte pair of lines. No counter is
 * updated per push or pop here: the small pools count through core's
 * per-thread counters and carved[], stackLarge through large_bytes.
 */
struct gostack__lf_list {
	ck_stack_t stack;
} __attribute__((aligned(GOSTACK__PAD)));

/* ---- lfstack.c: every ck_stack call -------------------------------------- */

/* Pop up to n (1..16) entries as a NULL-terminated chain; *got = how many. */
GOSTACK__HIDDEN ck_stack_entry_t *gostack__lf_pop(ck_stack_t *st, size_t n, size_t *got);
/* Push a chain first..last (last->next is overwritten). */
GOSTACK__HIDDEN void gostack__lf_push_chain(ck_stack_t *st, ck_stack_entry_t *first, ck_stack_entry_t *last);
/* Take every entry, bumping the generation. */
GOSTACK__HIDDEN ck_stack_entry_t *gostack__lf_drain(ck_stack_t *st);

/* ---- rcu.c: every liburcu call ------------------------------------------- */

/* At lock-free allocator creation, no lock held: start urcu-bp's worker. */
GOSTACK__HIDDEN void gostack__rcu_setup(void);
GOSTACK__HIDDEN void gostack__rcu_read_lock(void);
GOSTACK__HIDDEN void gostack__rcu_read_unlock(void);
/* Unmap the span's memory after a grace period (from the call_rcu worker). */
GOSTACK__HIDDEN void gostack__rcu_retire_span(struct gostack__span *s);
/* Wait for a grace period: every read section running now has ended. */
GOSTACK__HIDDEN void gostack__rcu_synchronize(void);
/* Wait until every deferred release queued so far has run. */
GOSTACK__HIDDEN void gostack__rcu_barrier(void);
GOSTACK__HIDDEN void gostack__rcu_thread_prepare(void);
GOSTACK__HIDDEN void gostack__rcu_fork_prepare(void);
GOSTACK__HIDDEN void gostack__rcu_fork_parent(void);
GOSTACK__HIDDEN void gostack__rcu_fork_child(void);

/* ---- the pools ------------------------------------------------------------ */

/* An order's pool spans past which carving a new span first sweeps (and 2x
 * what the last sweep left, so sweeps stay rare). */
#define GOSTACK__LF_SWEEP_MIN ((size_t)8 << 20)

/*
 * Invariant (whenever no operation runs): for each order o,
 *   free stacks of o in the pool = carved[o] - (pool_out[o] - pool_in[o]) * size(o)
 * where pool_out/pool_in are core's per-thread transfer counters
 * (struct gostack__tstat): the bytes of pool spans alive minus the stacks
 * of them that are handed out or cached.
 */
struct gostack__lf_pools {
	struct gostack__lf_list stackpool[GOSTACK_NUM_ORDERS];
	struct gostack__lf_list stackLarge[GOSTACK__LARGE_LISTS];
	_Alignas(GOSTACK__PAD) _Atomic size_t large_bytes;   /* bytes of spans on stackLarge[], <= GOSTACK__LARGE_KEEP */
	_Atomic size_t carved[GOSTACK_NUM_ORDERS];           /* bytes of live pool spans per order */
	_Atomic size_t carved_mark[GOSTACK_NUM_ORDERS];      /* carved[] after the last sweep */
	_Alignas(GOSTACK__PAD) pthread_mutex_t sweep_lock[GOSTACK_NUM_ORDERS];
	gostack_allocator_t *a;
	uint32_t decay_pass;   /* the scavenger's sweeping passes (decay_lock); starts at 1 */
};

/* Take a span out of the allocator's accounting and give it back to the OS
 * once no reader can hold a pointer into it. */
GOSTACK__HIDDEN void gostack__lf_retire(gostack_allocator_t *a, struct gostack__span *s, bool batch,
    struct gostack__span **batch_list);
/* Release a batch collected by gostack__lf_retire(..., true, ...): one grace
 * period for all (called with no lock held). */
GOSTACK__HIDDEN void gostack__lf_release_batch(struct gostack__span *list);

GOSTACK__HIDDEN struct gostack__span *gostack__lf_large_get(void *p, unsigned log2npages);
GOSTACK__HIDDEN void gostack__lf_large_put(void *p, struct gostack__span *s);
GOSTACK__HIDDEN size_t gostack__lf_large_drain(struct gostack__lf_pools *lp, struct gostack__span **batch);
/* The scavenger: spans idle on stackLarge since their decay_at are retired. */
GOSTACK__HIDDEN size_t gostack__lf_large_decay(struct gostack__lf_pools *lp, uint64_t now);

#endif /* GOSTACK_LOCKFREE_H */
