/*
 * scavenger.c: memory that goes back by itself (config.decay_ms), Go's
 * background scavenger (runtime/mgcscavenge.go: bgscavenge) for stacks.
 *
 * One background thread, started on first need (the first time memory of an
 * allocator with decay becomes idle: stacks given to a global pool, a span
 * to stackLarge or the heap; a stack that only moves between a thread and
 * its cache starts nothing) and again in a fork child, makes a pass every
 * max(10, min decay_ms / 2) ms while there is anything to give back:
 *   - stackLarge: a span the scavenger finds there is stamped (free path:
 *     no clock read) and goes back once it has been there decay_ms (so
 *     idle between decay_ms and decay_ms plus one period; pools_ops.decay);
 *   - lock-free pool spans: every decay_ms a sweep (Go's freeStackSpans)
 *     retires the spans whose stacks were all free at this sweep and at the
 *     previous one (so idle between decay_ms and 2 x decay_ms); the mutex
 *     pools free a span the moment its last stack comes back, as Go does;
 *   - the heap: a freed span's pages stay committed for decay_ms (reuse
 *     costs no page fault), then go back with MADV_DONTNEED.
 * Free stacks in a span that still has stacks in use, and stacks in a
 * thread's cache (at most 32 KiB per order), stay committed, as in Go.
 *
 * The alloc and free paths do nothing for this: no clock read, no counter
 * (a stackLarge free clears one word of span metadata). A span going back to
 * the heap is stamped with CLOCK_MONOTONIC_COARSE (vDSO), and a thread that
 * made memory idle kicks the scavenger once it holds no lock
 * (gostack__scavenger_note / _poke: the kick may start the thread).
 *
 * Sleeping: with nothing to give back (no allocator with decay has memory
 * mapped, no dirty heap unit has a deadline) the thread publishes IDLE,
 * looks once more (work_left) and only then sleeps until kicked. A kick is
 * one load of `state` when the thread runs (the free paths kick: nothing
 * shared is written there). Why no idle memory is missed: memory becomes
 * idle either in a pool, whose span raised its allocator's mapped with a
 * seq_cst RMW when it was carved (span.c), or in the heap, under the heap
 * lock. Against the first, the IDLE store and work_left's reload of mapped
 * (both seq_cst) form a Dekker pair with that RMW and the kick's later load
 * of state: either work_left sees mapped != 0 and the thread does not
 * sleep, or the kick sees IDLE and wakes it. Against the second, work_left
 * takes the heap lock after the IDLE store: either it sees the dirty unit,
 * or the free's heap lock came after, so the free's later kick sees IDLE. A
 * kick that sees IDLE wakes the thread under the mutex it waits with.
 *
 * Fork: the thread does not exist in the child; fork_prepare takes
 * gostack__decay_lock first of all, so no pass is half done, and the child
 * starts a new thread on its next kick. The thread blocks every signal.
 *
 * Exit: a destructor stops the thread and joins it (waiting at most
 * GOSTACK__SCAV_EXIT_WAIT_MS for a pass to end), so that no gostack thread
 * outlives main's return or exit() (its TLS would show as "possibly lost"
 * under valgrind --leak-check=full, and it would run while libraries are
 * torn down). After that nothing starts it again: idle memory goes back
 * only through reclaim. The library is never unmapped before exit (-z
 * nodelete), so the destructor runs once, at exit.
 */
#include <signal.h>
#include <time.h>

#include "mheap.h"
#include "pools.h"

enum { SCAV_NONE, SCAV_RUNNING, SCAV_IDLE, SCAV_FAILED, SCAV_STOPPED };

pthread_mutex_t gostack__decay_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t scav_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t scav_cv;
static _Atomic int scav_state;
static pthread_t scav_tid;              /* scav_mu: valid in RUNNING and IDLE */


uint64_t
gostack__now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ms from now on clock c, as a timespec deadline. */
static struct timespec
deadline(clockid_t c, long ms)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* One pass; returns the ms to sleep, or -1: nothing to do until kicked. */
static long
pass(void)
{
	uint64_t now, next;
	int min_decay = -1;
	bool busy = false;

	pthread_mutex_lock(&gostack__decay_lock);
	now = gostack__now_ms();
	/* The list is walked with only the decay lock held: allocators are
	 * deleted under it (so none leaves meanwhile) and created by pushing a
	 * new head (the snapshot's links do not change); pools_ops.release
	 * runs with no other gostack lock held, as pools.h asks. */
	pthread_mutex_lock(&gostack__registry_lock);
	gostack_allocator_t *first = LIST_FIRST(&gostack__allocators);
	pthread_mutex_unlock(&gostack__registry_lock);
	for (gostack_allocator_t *a = first; a != NULL; a = LIST_NEXT(a, link)) {
		if (a->decay_ms < 0)
			continue;
		bool sweep = now >= a->decay_sweep_at;

		a->ops->release(a->pools, now, sweep);
		if (sweep)
			a->decay_sweep_at = now + (uint64_t)a->decay_ms;
		if (atomic_load_explicit(&a->mapped, memory_order_relaxed) != 0)
			busy = true;
		if (min_decay < 0 || a->decay_ms < min_decay)
			min_decay = a->decay_ms;
	}
	gostack__heap_decay(now, &next);
	pthread_mutex_unlock(&gostack__decay_lock);
	if (next != UINT64_MAX)
		busy = true;
	if (!busy)
		return -1;
	long p = min_decay < 0 ? GOSTACK__SCAV_PERIOD_MAX_MS : min_decay / 2;

	if (next != UINT64_MAX && next > now && (long)(next - now) < p)
		p = (long)(next - now);   /* a dirty block's deadline comes first */
	return p < GOSTACK__SCAV_PERIOD_MIN_MS ? GOSTACK__SCAV_PERIOD_MIN_MS :
	    p > GOSTACK__SCAV_PERIOD_MAX_MS ? GOSTACK__SCAV_PERIOD_MAX_MS : p;
}

/* After IDLE is published: is there memory to watch after all? (The
 * second half of the Dekker pairs in the file comment.) No lock held. */
static bool
work_left(void)
{
	gostack_allocator_t *a;
	bool busy = false;

	pthread_mutex_lock(&gostack__registry_lock);
	LIST_FOREACH(a, &gostack__allocators, link)
		if (a->decay_ms >= 0 && atomic_load_explicit(&a->mapped, memory_order_seq_cst) != 0)
			busy = true;
	pthread_mutex_unlock(&gostack__registry_lock);
	return busy || gostack__heap_next_decay() != UINT64_MAX;
}

static void *
scavenger_main(void *arg)
{
	(void)arg;
	for (;;) {
		/* Relaxed: STOPPED is stored under scav_mu, which this thread
		 * took and released since (the waits below), or is seen late by
		 * one pass at most. */
		if (atomic_load_explicit(&scav_state, memory_order_relaxed) == SCAV_STOPPED)
			return NULL;
		long ms = pass();

		if (ms < 0) {
			/* seq_cst: the Dekker pairs of the file comment. */
			atomic_store_explicit(&scav_state, SCAV_IDLE, memory_order_seq_cst);
			if (work_left()) {
				int idle = SCAV_IDLE;   /* (a kick may have set RUNNING already) */

				atomic_compare_exchange_strong_explicit(&scav_state, &idle, SCAV_RUNNING,
				    memory_order_seq_cst, memory_order_seq_cst);
				continue;
			}
			pthread_mutex_lock(&scav_mu);
			while (atomic_load_explicit(&scav_state, memory_order_relaxed) == SCAV_IDLE)
				pthread_cond_wait(&scav_cv, &scav_mu);
		} else {
			struct timespec ts = deadline(CLOCK_MONOTONIC, ms);

			pthread_mutex_lock(&scav_mu);
			pthread_cond_timedwait(&scav_cv, &scav_mu, &ts);
		}
		pthread_mutex_unlock(&scav_mu);
	}
	return NULL;
}

/* scav_mu held. */
static void
start_locked(void)
{
	pthread_condattr_t ca;
	pthread_attr_t at;
	sigset_t all, old;
	pthread_t tid;
	int err;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&scav_cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_attr_init(&at);   /* joinable: joined at exit */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);   /* the thread inherits it */
	err = pthread_create(&tid, &at, scavenger_main, NULL);
	if (err == 0) {
		scav_tid = tid;
		(void)pthread_setname_np(tid, "gostack-scav");   /* what top and gdb show */
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&at);
	if (err != 0) {
		atomic_store_explicit(&scav_state, SCAV_FAILED, memory_order_seq_cst);
		gostack__warn("cannot start the scavenger thread (error %d): idle memory goes back "
		    "only through gostack_allocator_reclaim", err);
		return;
	}
	atomic_store_explicit(&scav_state, SCAV_RUNNING, memory_order_seq_cst);
}

void
gostack__scavenger_kick(void)
{
	/* seq_cst: the Dekker pairs with scavenger_main()'s IDLE store and
	 * work_left() (file comment); a plain load on x86, no shared write. */
	int st = atomic_load_explicit(&scav_state, memory_order_seq_cst);

	if (st == SCAV_RUNNING || st == SCAV_FAILED || st == SCAV_STOPPED)
		return;
	pthread_mutex_lock(&scav_mu);
	st = atomic_load_explicit(&scav_state, memory_order_relaxed);
	if (st == SCAV_NONE) {
		start_locked();
	} else if (st == SCAV_IDLE) {
		atomic_store_explicit(&scav_state, SCAV_RUNNING, memory_order_relaxed);
		pthread_cond_signal(&scav_cv);
	}
	pthread_mutex_unlock(&scav_mu);
}

/* Last in fork_prepare's order (a kick holds it with no other gostack lock). */
void gostack__scavenger_fork_prepare(void) { pthread_mutex_lock(&scav_mu); }
void gostack__scavenger_fork_parent(void) { pthread_mutex_unlock(&scav_mu); }

void
gostack__scavenger_fork_child(void)
{
	/* The thread did not survive: the next kick starts one (with a new
	 * condition variable). A failed start stays failed, a stop stopped. */
	int st = atomic_load_explicit(&scav_state, memory_order_relaxed);

	if (st != SCAV_FAILED && st != SCAV_STOPPED)
		atomic_store_explicit(&scav_state, SCAV_NONE, memory_order_relaxed);
	pthread_mutex_unlock(&scav_mu);
}

/* At exit (file comment): stop the thread, wake it, join it. */
__attribute__((destructor)) static void
scavenger_at_exit(void)
{
	struct timespec ts = deadline(CLOCK_REALTIME, GOSTACK__SCAV_EXIT_WAIT_MS);
	int st;

	/* Timed: exit() called where this thread holds scav_mu (a signal
	 * handler interrupting a kick) must not hang; the thread stays. */
	if (pthread_mutex_timedlock(&scav_mu, &ts) != 0)
		return;
	st = atomic_load_explicit(&scav_state, memory_order_relaxed);
	/* seq_cst: a kick's first load that sees STOPPED returns at once; one
	 * that saw RUNNING or IDLE earlier takes scav_mu and sees it there. */
	atomic_store_explicit(&scav_state, SCAV_STOPPED, memory_order_seq_cst);
	if (st == SCAV_RUNNING || st == SCAV_IDLE)
		pthread_cond_signal(&scav_cv);
	pthread_mutex_unlock(&scav_mu);
	if (st == SCAV_RUNNING || st == SCAV_IDLE)
		(void)pthread_timedjoin_np(scav_tid, NULL, &ts);
}
