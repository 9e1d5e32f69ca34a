/*
 * rcu.c: the only code that calls liburcu. Flavor: urcu-bp ("bulletproof"),
 * made for libraries whose callers are threads they never see created: the
 * first read lock registers a thread lazily, and a pthread key destructor
 * unregisters it at exit, so gostack needs no registration API.
 *
 * Correctness argument
 * --------------------
 * Readers. Every pop from a lock-free pool runs between
 * gostack__rcu_read_lock() and gostack__rcu_read_unlock() (stackpool.c,
 * stacklarge.c): the only moments at which a thread may hold a pointer to a
 * node it does not own.
 *
 * Writers. (1) A pool span's memory goes back to the heap, where it can be
 * reused for anything (a guarded span, whose guard pages fault on access),
 * only after it was made unreachable (its free stacks drained from the pool
 * by a generation-bumping DCAS and not pushed back: stackpool.c's sweep) and
 * then a grace period elapsed (gostack__rcu_synchronize, called by the
 * thread that retired it). (2) An arena, and with it the out-of-line span
 * metadata that stackLarge's links live in, is unmapped only after it was
 * detached from the heap with no span in it (so no pool holds a node in it)
 * and then a grace period elapsed (pools_ops.global_quiesce, from
 * core/pools.c). Any reader that could have loaded a pointer into the
 * memory did so in a section that began before the memory became
 * unreachable, and the grace period waits for all such sections to end.
 * Large spans' stack memory is never read by a pool reader, so a large span
 * goes back to the heap with no grace period (stacklarge.c).
 *
 * Where a grace period may be waited for, and where a read section may run,
 * is written in lockfree.h (the RCU rules). There is no call_rcu: no
 * callback, no urcu worker thread.
 *
 * fork. pthread_atfork order (core/allocator.c): prepare runs
 * urcu_bp_before_fork after the decay lock and before any other gostack
 * lock; parent and child run urcu_bp_after_fork_* after every gostack lock
 * is released. A child of a busy parent thus never waits on a grace period
 * that a dead parent thread's read section holds open. A process that only
 * ever uses the mutex pools never touches liburcu.
 *
 * GOSTACK_TEST_NO_GRACE (a test-only build switch) makes grace periods
 * return at once: the reclamation torture test must then fail.
 */
#include <urcu-bp.h>

#include "lockfree.h"

/* Keep each urcu call in its own frame (no tail call), so that TSan reports
 * name the gostack__rcu_* function that tests/tsan.supp lists. */
#define KEEP_FRAME() __asm__ __volatile__("" ::: "memory")

/* Set (release) once a lock-free allocator exists; read with acquire by the
 * fork and quiesce hooks: until then a process that uses only the mutex pools
 * never registers with urcu-bp. */
static _Atomic bool lf_used;
/* Whether fork_prepare ran urcu's hooks (parent/child must match it). */
static bool lf_fork_hooks;

void
gostack__rcu_setup(void)
{
	/* Pairs with the acquire loads in the quiesce and fork hooks. */
	atomic_store_explicit(&lf_used, true, memory_order_release);
}

__attribute__((noinline)) void
gostack__rcu_read_lock(void)
{
	urcu_bp_read_lock();
	KEEP_FRAME();
}

__attribute__((noinline)) void
gostack__rcu_read_unlock(void)
{
	urcu_bp_read_unlock();
	KEEP_FRAME();
}

__attribute__((noinline)) void
gostack__rcu_synchronize(void)
{
#ifndef GOSTACK_TEST_NO_GRACE
	urcu_bp_synchronize_rcu();
	KEEP_FRAME();
#endif
}

void
gostack__rcu_quiesce(void)
{
	/* Pairs with the release store in gostack__rcu_setup(). */
	if (atomic_load_explicit(&lf_used, memory_order_acquire))
		gostack__rcu_synchronize();
}

void
gostack__rcu_fork_prepare(void)
{
	/* Pairs with the release store in gostack__rcu_setup(). */
	lf_fork_hooks = atomic_load_explicit(&lf_used, memory_order_acquire);
	if (lf_fork_hooks)
		urcu_bp_before_fork();
}

void
gostack__rcu_fork_parent(void)
{
	if (lf_fork_hooks)
		urcu_bp_after_fork_parent();
}

void
gostack__rcu_fork_child(void)
{
	if (lf_fork_hooks)
		urcu_bp_after_fork_child();
}
