/*
 * Stress tests: many more threads than cores. Every stack carries a stamp
 * (a unique token and its size, at both ends and in the middle) written by
 * its owner and checked before it is passed on and at free, so a stack
 * handed to two owners at once, or a pool that loses or corrupts a link,
 * shows up as a foreign token, a torn stamp or a crash. Stacks travel
 * between threads, threads come and go without flushing, and at the end the
 * stats must balance with nothing in use.
 * Not a benchmark.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "test.h"

#define SLOTS 256

static gostack_allocator_t *A;
static _Atomic uintptr_t slot[SLOTS];
static _Atomic long corrupt;

static size_t
pick_size(uint64_t *rng)
{
	uint64_t r = test_rand(rng);

	if (r % 16 == 0)                          /* large: 32 KiB .. 256 KiB */
		return (size_t)32768 << ((r >> 8) % 4);
	return ((size_t)2048 << ((r >> 8) % 4)) - (size_t)((r >> 16) % 7);   /* rounded up */
}

/* The stack at lo must hold a consistent stamp; free it. */
static void
check_and_free(uintptr_t lo)
{
	uint64_t w[2];

	memcpy(w, (void *)lo, sizeof w);
	gostack_t s = { lo, lo + (size_t)w[1] };

	if (w[1] < 2048 || w[1] > ((size_t)1 << 20) || !stamp_ok(s, w[0])) {
		atomic_fetch_add_explicit(&corrupt, 1, memory_order_relaxed);
		return;   /* do not free garbage */
	}
	gostack_allocator_free(A, s);
}

struct worker { int id; int rounds; };

static void *
exchange_worker(void *arg)
{
	struct worker *w = arg;
	uint64_t rng = 0x1234567ull * (uint64_t)(w->id + 1);
	gostack_t held[8] = { { 0, 0 } };
	uint64_t tok[8] = { 0 };

	for (int i = 0; i < w->rounds; i++) {
		uint64_t token = ((uint64_t)w->id << 40) | (uint64_t)i;
		gostack_t s = gostack_allocator_alloc(A, pick_size(&rng));

		if (s.lo == 0) {
			atomic_fetch_add_explicit(&corrupt, 1, memory_order_relaxed);
			continue;
		}
		stamp_set(s, token);
		uint64_t r = test_rand(&rng);

		if (r % 64 == 0)
			sched_yield();                    /* widen race windows */
		if (r % 512 == 1)
			gostack_thread_flush();
		if (!stamp_ok(s, token))                  /* still ours alone */
			atomic_fetch_add_explicit(&corrupt, 1, memory_order_relaxed);
		if (r % 3 == 0) {                         /* keep it a while */
			int k = (int)((r >> 8) % 8);

			if (held[k].lo != 0) {
				if (!stamp_ok(held[k], tok[k]))
					atomic_fetch_add_explicit(&corrupt, 1, memory_order_relaxed);
				gostack_allocator_free(A, held[k]);
			}
			held[k] = s;
			tok[k] = token;
		} else {                                  /* hand it to whoever comes next */
			uintptr_t old = atomic_exchange_explicit(&slot[(r >> 8) % SLOTS], s.lo,
			    memory_order_acq_rel);

			if (old != 0)
				check_and_free(old);
		}
	}
	for (int k = 0; k < 8; k++) {
		if (held[k].lo == 0)
			continue;
		if (!stamp_ok(held[k], tok[k]))
			atomic_fetch_add_explicit(&corrupt, 1, memory_order_relaxed);
		gostack_allocator_free(A, held[k]);
	}
	return NULL;   /* no flush: the exit destructor must return the caches */
}

static void
run_threads(int n, int rounds, void *(*fn)(void *))
{
	pthread_t *th = calloc((size_t)n, sizeof *th);
	struct worker *w = calloc((size_t)n, sizeof *w);

	for (int i = 0; i < n; i++) {
		w[i].id = i;
		w[i].rounds = rounds;
		if (pthread_create(&th[i], NULL, fn, &w[i]) != 0)
			abort();
	}
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	free(th);
	free(w);
}

static void
drain_slots(void)
{
	for (int i = 0; i < SLOTS; i++) {
		uintptr_t lo = atomic_exchange(&slot[i], 0);

		if (lo != 0)
			check_and_free(lo);
	}
}

static void
check_end(const char *name)
{
	gostack_stats_t st;

	gostack_thread_flush();         /* drain_slots freed into this thread's cache */
	gostack_allocator_stats(A, &st);
	printf("     %s: allocs %ju frees %ju inuse %zu cached %zu pooled %zu mapped %zu\n", name,
	    (uintmax_t)st.allocs, (uintmax_t)st.frees, st.inuse_bytes, st.cached_bytes, st.pooled_bytes,
	    st.mapped_bytes);
	CHECK_EQ(atomic_load(&corrupt), 0);
	CHECK_EQ(st.allocs, st.frees);
	CHECK_EQ(st.inuse_bytes, 0);
	CHECK_EQ(st.cached_bytes, 0);   /* every worker exited, this thread flushed */
	test_check_balance(A, name);
	gostack_allocator_reclaim(A);
	gostack_allocator_stats(A, &st);
	CHECK_EQ(st.mapped_bytes, 0);
	CHECK_EQ(st.pooled_bytes, 0);
}

TEST(exchange)
{
	A = test_allocator();
	atomic_store(&corrupt, 0);
	run_threads(test_threads, 3000 * test_scale, exchange_worker);
	drain_slots();
	check_end("exchange");
	CHECK_EQ(gostack_allocator_delete(A), 0);
}

/* Waves of short-lived threads; stacks outlive the threads that made them. */
TEST(thread_churn)
{
	A = test_allocator();
	atomic_store(&corrupt, 0);
	for (int wave = 0; wave < 8 * test_scale; wave++)
		run_threads(test_threads / 2 + 1, 200, exchange_worker);
	drain_slots();
	check_end("thread_churn");
	CHECK_EQ(gostack_allocator_delete(A), 0);
}

/* Producers allocate, consumers on other threads free (xmalloc-test). */
#define QCAP 1024
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uintptr_t q[QCAP];
	int head, tail, producers_left;
} Q = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, { 0 }, 0, 0, 0 };

static void *
producer(void *arg)
{
	struct worker *w = arg;
	uint64_t rng = 77u + (uint64_t)w->id;

	for (int i = 0; i < w->rounds; i++) {
		gostack_t s = gostack_allocator_alloc(A, pick_size(&rng));

		if (s.lo == 0) {
			atomic_fetch_add(&corrupt, 1);
			continue;
		}
		stamp_set(s, ((uint64_t)w->id << 40) | (uint64_t)i);
		pthread_mutex_lock(&Q.mu);
		while ((Q.tail + 1) % QCAP == Q.head)
			pthread_cond_wait(&Q.cv, &Q.mu);
		Q.q[Q.tail] = s.lo;
		Q.tail = (Q.tail + 1) % QCAP;
		pthread_cond_broadcast(&Q.cv);
		pthread_mutex_unlock(&Q.mu);
	}
	pthread_mutex_lock(&Q.mu);
	Q.producers_left--;
	pthread_cond_broadcast(&Q.cv);
	pthread_mutex_unlock(&Q.mu);
	return NULL;
}

static void *
consumer(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&Q.mu);
		while (Q.head == Q.tail && Q.producers_left > 0)
			pthread_cond_wait(&Q.cv, &Q.mu);
		if (Q.head == Q.tail) {
			pthread_mutex_unlock(&Q.mu);
			return NULL;
		}
		uintptr_t lo = Q.q[Q.head];

		Q.head = (Q.head + 1) % QCAP;
		pthread_cond_broadcast(&Q.cv);
		pthread_mutex_unlock(&Q.mu);
		check_and_free(lo);
	}
}

TEST(handoff)
{
	int np = test_threads / 2, nc = test_threads - np;
	pthread_t th[1024];
	struct worker w[1024];

	A = test_allocator();
	atomic_store(&corrupt, 0);
	Q.producers_left = np;
	for (int i = 0; i < np + nc && i < 1024; i++) {
		w[i].id = i;
		w[i].rounds = 2000 * test_scale;
		pthread_create(&th[i], NULL, i < np ? producer : consumer, &w[i]);
	}
	for (int i = 0; i < np + nc && i < 1024; i++)
		pthread_join(th[i], NULL);
	check_end("handoff");
	CHECK_EQ(gostack_allocator_delete(A), 0);
}

/* stats, flush and reclaim from other threads while workers run. */
static _Atomic int stop;
static void *
meddler(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		gostack_stats_t st;

		gostack_allocator_stats(A, &st);
		gostack_allocator_reclaim(A);
		gostack_thread_flush();
		sched_yield();
	}
	return NULL;
}

TEST(reclaim_while_running)
{
	pthread_t m[2];

	A = test_allocator();
	atomic_store(&corrupt, 0);
	atomic_store(&stop, 0);
	for (int i = 0; i < 2; i++)
		pthread_create(&m[i], NULL, meddler, NULL);
	run_threads(test_threads, 2000 * test_scale, exchange_worker);
	atomic_store(&stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(m[i], NULL);
	drain_slots();
	check_end("reclaim_while_running");
	CHECK_EQ(gostack_allocator_delete(A), 0);
}

TEST_MAIN(T(exchange), T(thread_churn), T(handoff), T(reclaim_while_running))
