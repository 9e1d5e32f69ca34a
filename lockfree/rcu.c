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
 * Writers. A span is unmapped only after (1) it has been made unreachable:
 * its free stacks were drained from the pool by a generation-bumping DCAS
 * and not pushed back (stackpool.c's sweep), or, for a large span, it was
 * popped or never pushed; and then (2) a grace period has elapsed, either
 * through call_rcu (the callback runs in urcu-bp's worker thread) or through
 * synchronize_rcu in reclaim, which batches a whole sweep into one grace
 * period off the hot path. Any reader that could have loaded a pointer into
 * the span did so in a section that began before (1), and (2) waits for all
 * such sections to end. Arenas, and with them the out-of-line span metadata
 * that stackLarge's links live in, are unmapped only when every span in them
 * has gone back to the heap, i.e. after the same grace periods.
 *
 * What must never happen: synchronize_rcu or rcu_barrier inside a read
 * section or while holding a gostack lock (reclaim drops its locks first),
 * and a first read lock (which registers the thread under urcu-bp's registry
 * mutex) while holding a gostack lock that fork_prepare takes after
 * urcu_bp_before_fork: core calls gostack__rcu_thread_prepare() before it
 * takes the registry lock on paths that free into the pools.
 *
 * fork. pthread_atfork order (core/allocator.c): prepare runs
 * urcu_bp_call_rcu_before_fork (pauses the worker, which may be inside a
 * callback that takes the heap lock) then urcu_bp_before_fork, before any
 * gostack lock; parent and child run urcu_bp_after_fork_* then
 * urcu_bp_call_rcu_after_fork_*, after every gostack lock is released. A
 * child of a busy parent thus never waits on a grace period that a dead
 * parent thread's read section holds open.
 *
 * liburcu 0.13.2 creates the call_rcu worker with the signal mask of the
 * thread that first calls call_rcu; gostack creates it when the first
 * lock-free allocator is created (no gostack lock held, so the worker's
 * creation never nests liburcu's call_rcu mutex inside a sweep lock), with
 * every signal blocked, so it never steals a signal meant for the host. A
 * process that only ever uses the mutex pools never touches liburcu.
 *
 * GOSTACK_TEST_NO_GRACE (a test-only build switch) releases spans at once,
 * without a grace period: the reclamation torture test must then fail.
 */
#include <signal.h>
#include <urcu-bp.h>

#include "lockfree.h"

/* Keep each urcu call in its own frame (no tail call), so that TSan reports
 * name the gostack__rcu_* function that tests/tsan.supp lists. */
#define KEEP_FRAME() __asm__ __volatile__("" ::: "memory")


static pthread_once_t lf_rcu_once = PTHREAD_ONCE_INIT;
/* Set once a lock-free allocator exists: until then a process that uses
 * only the mutex pools never registers with urcu-bp or starts its worker. */
static _Atomic bool lf_used;
/* Whether fork_prepare ran urcu's hooks (parent/child must match it). */
static bool lf_fork_hooks;
/* call_rcu releases queued and not yet run: rcu_barrier only when needed. */
static _Atomic long pending;

static void
lf_rcu_setup(void)
{
	sigset_t all, old;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	(void)urcu_bp_get_default_call_rcu_data();   /* spawns the worker, signals blocked */
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static inline void
lf_rcu_ensure_setup(void)
{
	pthread_once(&lf_rcu_once, lf_rcu_setup);
}

void
gostack__rcu_setup(void)
{
	/* Called from allocator creation, with no gostack lock held: the
	 * worker is spawned (taking liburcu's call_rcu mutex) before any
	 * call_rcu could happen under a sweep lock. lf_used is set first, so
	 * that a fork racing with the worker's creation runs liburcu's fork
	 * hooks (which wait for the call_rcu mutex) instead of leaving that
	 * mutex locked in the child (found by test_fork under load). */
	atomic_store_explicit(&lf_used, true, memory_order_release);
	lf_rcu_ensure_setup();
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

static void
lf_release_cb(struct rcu_head *head)
{
	struct gostack__lf_span *l = caa_container_of(head, struct gostack__lf_span, rcu);
	struct gostack__span *s = (struct gostack__span *)(void *)((char *)l -
	    offsetof(struct gostack__span, backend));

	tsan_acquire(s);
	gostack__span_free(NULL, s, GOSTACK__RELEASE_UNMAP);
	atomic_fetch_sub_explicit(&pending, 1, memory_order_release);
}

void
gostack__rcu_retire_span(struct gostack__span *s)
{
#ifdef GOSTACK_TEST_NO_GRACE
	gostack__span_free(NULL, s, GOSTACK__RELEASE_UNMAP);
#else
	atomic_fetch_add_explicit(&pending, 1, memory_order_relaxed);
	tsan_release(s);
	urcu_bp_call_rcu(&gostack__lf(s)->rcu, lf_release_cb);
	KEEP_FRAME();
#endif
}

__attribute__((noinline)) void
gostack__rcu_synchronize(void)
{
#ifndef GOSTACK_TEST_NO_GRACE
	urcu_bp_synchronize_rcu();
	KEEP_FRAME();
#endif
}

__attribute__((noinline)) void
gostack__rcu_barrier(void)
{
	/* Pairs with the release in lf_release_cb: 0 means every queued
	 * release has run, so there is nothing to wait for. */
	if (atomic_load_explicit(&pending, memory_order_acquire) == 0)
		return;
	urcu_bp_barrier();
	KEEP_FRAME();
}

void
gostack__rcu_thread_prepare(void)
{
	/* Register the thread now (a no-op once registered), outside every
	 * gostack lock; call_rcu and pops under those locks then never need
	 * urcu-bp's registry mutex. */
	if (!atomic_load_explicit(&lf_used, memory_order_acquire))
		return;
	urcu_bp_read_lock();
	urcu_bp_read_unlock();
}

void
gostack__rcu_fork_prepare(void)
{
	lf_fork_hooks = atomic_load_explicit(&lf_used, memory_order_acquire);
	if (!lf_fork_hooks)
		return;
	urcu_bp_call_rcu_before_fork();
	urcu_bp_before_fork();
}

void
gostack__rcu_fork_parent(void)
{
	if (!lf_fork_hooks)
		return;
	urcu_bp_after_fork_parent();
	urcu_bp_call_rcu_after_fork_parent();
}

void
gostack__rcu_fork_child(void)
{
	if (!lf_fork_hooks)
		return;
	urcu_bp_after_fork_child();
	urcu_bp_call_rcu_after_fork_child();
}
