/*
 * The lock-free global pools: Go's stackpool[order] and stackLarge rebuilt
 * as ConcurrencyKit lock-free stacks; a retired pool span's memory is reused
 * only after a liburcu (urcu-bp) grace period.
 *
 *   lfstack.c     the only calls into ck_stack: pop (single and batch),
 *                 chain push, drain (each names its ABA and ordering argument)
 *   rcu.c         the only calls into liburcu: read sections, grace
 *                 periods, fork hooks
 *   stackpool.c   stackpool[order]: refill/release batches, the sweep that
 *                 retires fully free spans, the backend's ops table
 *   stacklarge.c  stackLarge[log2(npages)]
 *
 * Only ck_stack_pop_mpmc and this directory's own generation-bumping batch
 * pop and drain are used to pop: all bump the generation with a double-width
 * CAS, so a node popped and pushed straight back never lets a stale snapshot
 * succeed (no ABA). ck 0.7.1's ck_stack_batch_pop_mpmc does not bump the
 * generation and is never used.
 *
 * RCU rules (as liburcu documents its own):
 *  - Read sections (gostack__rcu_read_lock/unlock) wrap exactly the pops
 *    of gostack__lf_pop, and are entered with no gostack lock held: the
 *    first one in a thread registers it with urcu-bp (taking urcu's registry
 *    mutex), which must never nest inside a lock that fork_prepare takes
 *    after urcu_bp_before_fork. Nothing inside a read section takes a lock,
 *    blocks, or waits.
 *  - gostack__rcu_synchronize (a grace period) is called with at most
 *    gostack__decay_lock held (reclaim, delete, the scavenger's pass, the
 *    engine's gostack__release_arenas), or with no gostack lock at all (a
 *    refill's automatic sweep); never inside a read section, never with the
 *    registry lock, a pool lock (sweep, order, stackLarge), the heap lock or
 *    the meta lock held. That is safe because no reader waits for any lock
 *    and no other thread holding decay_lock waits for a reader.
 *  - No call_rcu, so no RCU callback and no urcu worker thread: retired
 *    spans are released by the thread that retired them, after its own
 *    grace period, or never retired at all (large spans, below).
 *  - fork: urcu_bp_before_fork runs after the decay lock is taken and
 *    before every other gostack lock (pools.h's lock order); its after_fork
 *    hooks after all are released.
 */
#ifndef GOSTACK_LOCKFREE_H
#define GOSTACK_LOCKFREE_H

#include <ck_stack.h>

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
 * The lock-free backend's fields of a span (span->pool).
 * entry:       stackLarge's link (large spans are linked through their
 *              out-of-line metadata, never through stack memory).
 * sweep_next, sweep_count: the sweeper's, only under that order's sweep
 *              lock; sweep_next also links a batch of retired spans, owned by
 *              the thread that retired them.
 * idle_pass:   the scavenger's sweeping pass that last found the span all
 *              free (decay_lock).
 */
struct gostack__lf_span {
	ck_stack_entry_t entry;
	struct gostack__span *sweep_next;
	uint32_t sweep_count;
	uint32_t idle_pass;
};
_Static_assert(sizeof(struct gostack__lf_span) <= GOSTACK__SPAN_POOL_BYTES,
    "lock-free span fields do not fit the span's pool area");

static inline struct gostack__lf_span *
gostack__lf(struct gostack__span *s)
{
	return (struct gostack__lf_span *)(void *)s->pool;
}

static inline struct gostack__span *
gostack__lf_span_of_entry(ck_stack_entry_t *e)
{
	return gostack__span_of_pool((char *)e - offsetof(struct gostack__lf_span, entry));
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

/* Append e to the private chain *first..*last (for a push of the whole
 * chain in one CAS, in the order appended). */
static inline void
gostack__lf_chain_append(ck_stack_entry_t **first, ck_stack_entry_t **last, ck_stack_entry_t *e)
{
	e->next = NULL;
	if (*last != NULL)
		(*last)->next = e;
	else
		*first = e;
	*last = e;
}

/* ---- lfstack.c: every ck_stack call -------------------------------------- */

/* Test builds (GOSTACK_TEST_HOOKS) only: a sched_yield() one time in
 * GOSTACK_TEST_YIELD, in the windows the hazard tests widen (lfstack.c's
 * pops, percpu.c's critical sections); nothing elsewhere. */
#ifdef GOSTACK_TEST_HOOKS
GOSTACK__HIDDEN void gostack__lf_test_window(void);
#else
#define gostack__lf_test_window() ((void)0)
#endif

/* Pop up to n (1..16) entries as a NULL-terminated chain; *got = how many. */
GOSTACK__HIDDEN ck_stack_entry_t *gostack__lf_pop(ck_stack_t *st, size_t n, size_t *got);
/* Push a chain first..last (last->next is overwritten). */
GOSTACK__HIDDEN void gostack__lf_push_chain(ck_stack_t *st, ck_stack_entry_t *first, ck_stack_entry_t *last);
/* Take every entry, bumping the generation. */
GOSTACK__HIDDEN ck_stack_entry_t *gostack__lf_drain(ck_stack_t *st);

/* ---- rcu.c: every liburcu call ------------------------------------------- */

/* At lock-free allocator creation: from now on fork runs urcu's hooks. */
GOSTACK__HIDDEN void gostack__rcu_setup(void);
GOSTACK__HIDDEN void gostack__rcu_read_lock(void);
GOSTACK__HIDDEN void gostack__rcu_read_unlock(void);
/* Wait for a grace period: every read section running now has ended. */
GOSTACK__HIDDEN void gostack__rcu_synchronize(void);
/* pools_ops.global_quiesce: a grace period, if a lock-free allocator was
 * ever created. */
GOSTACK__HIDDEN void gostack__rcu_quiesce(void);
GOSTACK__HIDDEN void gostack__rcu_fork_prepare(void);
GOSTACK__HIDDEN void gostack__rcu_fork_parent(void);
GOSTACK__HIDDEN void gostack__rcu_fork_child(void);

/* ---- the pools ------------------------------------------------------------ */

/* GOSTACK__LF_SWEEP_MIN: core/options.h. */

/* transfer.c: a batch of free stacks of one order (their gclinks), on its
 * order's full list, on the free list (n == 0), or owned by the thread that
 * popped it. Descriptors are the pools' for their whole life. */
struct gostack__lf_xfer {
	ck_stack_entry_t entry;
	uint32_t n;                                          /* slot[0 .. n) */
	struct gostack__gclink *slot[GOSTACK__PCPU_XFER];
};

/*
 * Invariant (whenever no operation runs): for each order o,
 *   free stacks of o in the pool (its list, the per-CPU bins, the transfer
 *   batches) = carved[o] - (pool_out[o] - pool_in[o]) * size(o)
 * where pool_out/pool_in are core's per-thread transfer counters
 * (struct gostack__tstat): the bytes of pool spans alive minus the stacks
 * of them that are handed out or cached. retiring = bytes of spans taken
 * off the pools and waiting for their grace period (0 at quiescent points:
 * the thread that retires them releases them before it returns).
 */
struct gostack__lf_pools {
	struct gostack__lf_list stackpool[GOSTACK_NUM_ORDERS];
	struct gostack__lf_list xfer_full[GOSTACK_NUM_ORDERS];   /* transfer.c (with the tier only) */
	struct gostack__lf_list xfer_free;
	struct gostack__lf_xfer *xfer;                       /* the descriptors, or NULL */
	size_t xfer_count;
	struct gostack__lf_list stackLarge[GOSTACK__LARGE_LISTS];
	_Alignas(GOSTACK__PAD) _Atomic size_t large_bytes;   /* bytes of spans on stackLarge[], <= GOSTACK__LARGE_KEEP */
	_Atomic size_t carved[GOSTACK_NUM_ORDERS];           /* bytes of live pool spans per order */
	_Atomic size_t carved_mark[GOSTACK_NUM_ORDERS];      /* carved[] after the last sweep */
	_Atomic size_t retiring;                             /* bytes of retired spans before their grace period */
	_Alignas(GOSTACK__PAD) pthread_mutex_t sweep_lock[GOSTACK_NUM_ORDERS];
	gostack_allocator_t *a;
	uint32_t decay_pass;   /* the scavenger's sweeping passes (decay_lock); starts at 1 */
	struct gostack__pcpu *pcpu;   /* the per-CPU tier, or NULL (percpu.c) */
};

/* transfer.c (its correctness argument is there). */
/* The lists, and ncpu x GOSTACK__PCPU_XFER_BATCHES descriptors (none for
 * ncpu 0, or without memory: then no batches). */
GOSTACK__HIDDEN void gostack__lf_xfer_init(struct gostack__lf_pools *lp, int ncpu);
GOSTACK__HIDDEN void gostack__lf_xfer_destroy(struct gostack__lf_pools *lp);
/* This CPU's bin of order is full: a batch of it onto the full list;
 * false when no descriptor is free (then the caller goes on without). */
GOSTACK__HIDDEN bool gostack__lf_xfer_put(struct gostack__lf_pools *lp, int order);
/* A batch off the full list: up to n stacks into out[], the rest into this
 * CPU's bin (or the stacks' list); how many into out. */
GOSTACK__HIDDEN size_t gostack__lf_xfer_get(struct gostack__lf_pools *lp, int order, size_t n,
    struct gostack__gclink **out);
/* Sweep (sweep lock held): every batch of order drained, its stacks
 * prepended to chain; returns the chain. */
GOSTACK__HIDDEN struct gostack__gclink *gostack__lf_xfer_drain(struct gostack__lf_pools *lp, int order,
    struct gostack__gclink *chain);

GOSTACK__HIDDEN struct gostack__span *gostack__lf_large_get(void *p, unsigned log2npages);
GOSTACK__HIDDEN void gostack__lf_large_put(void *p, struct gostack__span *s);
/* large_get and large_put past the per-CPU tier: a span off stackLarge
 * (or NULL); onto stackLarge, or to the heap past the bound (a span
 * drained from the tier goes here too). */
GOSTACK__HIDDEN struct gostack__span *gostack__lf_large_get_global(struct gostack__lf_pools *lp, unsigned log2npages);
GOSTACK__HIDDEN void gostack__lf_large_put_global(struct gostack__lf_pools *lp, struct gostack__span *s);
/* Spans idle on stackLarge since before now back to the heap
 * (GOSTACK__RELEASE_ALL: all of them); returns the bytes. */
GOSTACK__HIDDEN size_t gostack__lf_large_release(struct gostack__lf_pools *lp, uint64_t now);

/* ---- percpu.c: the per-CPU tier (its correctness argument is there) ------ */

/*
 * Classes (sizeclass.h's gostack__class_of): the small orders 0 ..
 * GOSTACK_NUM_ORDERS - 1 (bins of gclinks), then stackLarge's lists of
 * log2(npages) GOSTACK__PCPU_LARGE_MIN .. GOSTACK__PCPU_LARGE_MAX (32 KiB ..
 * 1 MiB stacks: bins of spans).
 */
#define GOSTACK__PCPU_LARGE_MIN 2
#define GOSTACK__PCPU_LARGE_MAX 7
#define GOSTACK__PCPU_LARGE_CLASSES (GOSTACK__PCPU_LARGE_MAX - GOSTACK__PCPU_LARGE_MIN + 1)
#define GOSTACK__PCPU_CLASSES (GOSTACK_NUM_ORDERS + GOSTACK__PCPU_LARGE_CLASSES)

/* One CPU's bin of one small order: written only by CSs on that CPU, or by
 * the drainer while the CPU is stopped. slot[0 .. count) are free stacks
 * (their gclinks); count <= the class's cap. */
struct gostack__pcpu_bin {
	uint32_t count;
	struct gostack__gclink *slot[GOSTACK__PCPU_SLOTS];
} __attribute__((aligned(64)));

/* The same for one large class: slot[0 .. count) are free large spans. The
 * critical sections see both kinds alike: count at offset 0, the slots
 * (pointers) from offset 8. */
struct gostack__pcpu_lbin {
	uint32_t count;
	struct gostack__span *slot[GOSTACK__PCPU_LARGE_SLOTS];
} __attribute__((aligned(64)));

_Static_assert(offsetof(struct gostack__pcpu_bin, slot) == 8 && offsetof(struct gostack__pcpu_lbin, slot) == 8,
    "percpu.c's critical sections address slot[] at offset 8");

struct gostack__pcpu_cpu {
	_Atomic uint32_t stopped;                  /* written by the drainer only; read inside every CS */
	uint32_t seen[GOSTACK__PCPU_CLASSES];      /* the drainer's last look at each count (decay) */
	struct gostack__pcpu_bin bin[GOSTACK_NUM_ORDERS];
	struct gostack__pcpu_lbin lbin[GOSTACK__PCPU_LARGE_CLASSES];
} __attribute__((aligned(64)));

struct gostack__pcpu {
	int ncpu;                                  /* possible CPU ids 0 .. ncpu - 1 */
	size_t bytes;                              /* of this mapping */
	uint32_t cap[GOSTACK__PCPU_CLASSES];       /* slots used per class (percpu.c: pcpu_cap) */
	pthread_mutex_t drain_lock;                /* one drainer at a time */
	struct gostack__pcpu_cpu cpu[] __attribute__((aligned(64)));
};

/* Whether rseq (glibc's registration) and the membarrier rseq fence work
 * here; probed once. */
GOSTACK__HIDDEN bool gostack__pcpu_available(void);
/* A tier for one allocator, or NULL (unavailable, or no memory: run without). */
GOSTACK__HIDDEN struct gostack__pcpu *gostack__pcpu_create(void);
GOSTACK__HIDDEN void gostack__pcpu_destroy(struct gostack__pcpu *pc);
/* Up to k (<= 16) stacks of this CPU's bin into out[] / in[0 .. k) into
 * it, as many as fit (a prefix of in); as arrays of gclinks, the stacks
 * untouched. How many. One stack takes the single-item section. */
GOSTACK__HIDDEN size_t gostack__pcpu_take(struct gostack__pcpu *pc, int order, void **out, size_t k);
GOSTACK__HIDDEN size_t gostack__pcpu_give(struct gostack__pcpu *pc, int order, void *const *in, size_t k);
/* The possible CPUs (the bins' count). */
GOSTACK__HIDDEN int gostack__pcpu_ncpu(const struct gostack__pcpu *pc);
/* stackLarge's get and put with the tier (lp->pcpu): a free large span of
 * list log2npages from this CPU's bin, else gostack__lf_large_get_global;
 * the freed large span s into this CPU's bin of its list, else (no room,
 * stopped, or a list the tier does not keep) gostack__lf_large_put_global. */
GOSTACK__HIDDEN struct gostack__span *gostack__pcpu_large_get(struct gostack__lf_pools *lp, unsigned log2npages);
GOSTACK__HIDDEN void gostack__pcpu_large_put(struct gostack__lf_pools *lp, struct gostack__span *s);
/* Every CPU's bins of classes [first, end) (all) or the ones unchanged
 * since the previous drain (decay) to put(arg, class, items, n): gclinks
 * of a small order, spans of a large class; decay_lock held. Bytes moved. */
GOSTACK__HIDDEN size_t gostack__pcpu_drain(struct gostack__pcpu *pc, bool all, int first, int end,
    void (*put)(void *, int, void *const *, uint32_t), void *arg);
/* Bytes in the bins of classes [first, end) (a relaxed snapshot). */
GOSTACK__HIDDEN size_t gostack__pcpu_bytes(const struct gostack__pcpu *pc, int first, int end);
GOSTACK__HIDDEN void gostack__pcpu_fork_prepare(struct gostack__pcpu *pc);
GOSTACK__HIDDEN void gostack__pcpu_fork_parent(struct gostack__pcpu *pc);

#endif /* GOSTACK_LOCKFREE_H */
