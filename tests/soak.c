/*
 * Soak test (not in the default ctest run; tests/soak runs it): many
 * threads for a configurable time, in epochs. During an epoch, short-lived
 * worker threads (thread churn) allocate from four allocators (both
 * backends, cached and no-cache), stamp every stack, hand stacks to each
 * other through shared slots, hold some, free them on other threads; a
 * reclaimer thread calls reclaim and stats while they run. At the end of
 * each epoch the workers are joined, every slot is drained, and each
 * allocator must have nothing in use, balanced stats and, after reclaim,
 * nothing mapped; RSS after reclaim must stay within a bound of the first
 * epoch's. One line per epoch; exit status 0 only if every check held.
 * Usage: soak [--seconds N] [--threads N] [--epoch N]
 */
#define _GNU_SOURCE   /* pthread_tryjoin_np */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gostack.h"
#include "proc.h"

#define NALLOC 6   /* at most 8: the allocator index is tagged into lo's low bits */
#define SLOTS 1024

static gostack_allocator_t *A[NALLOC];
static _Atomic uintptr_t slot[SLOTS];          /* lo | allocator index in the low bits */
static _Atomic long corrupt, ops, failed_allocs;
static _Atomic int stop_epoch;

#define now proc_now

static uint64_t
rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void
stamp(gostack_t s)
{
	uint64_t w[2] = { (uint64_t)s.lo * 0x2545f4914f6cdd1dull, s.hi - s.lo };

	memcpy((void *)s.lo, w, sizeof w);
	memcpy((void *)(s.hi - sizeof w), w, sizeof w);
}

static bool
stamp_ok(gostack_t s)
{
	uint64_t a[2], b[2];

	memcpy(a, (void *)s.lo, sizeof a);
	memcpy(b, (void *)(s.hi - sizeof b), sizeof b);
	return a[0] == (uint64_t)s.lo * 0x2545f4914f6cdd1dull && a[1] == s.hi - s.lo &&
	    memcmp(a, b, sizeof a) == 0;
}

static void
free_tagged(uintptr_t tagged)
{
	int k = (int)(tagged & 7);   /* lo is at least 2 KiB-aligned: 3 tag bits */
	uintptr_t lo = tagged & ~(uintptr_t)7;
	uint64_t w[2];

	memcpy(w, (void *)lo, sizeof w);
	gostack_t s = { lo, lo + (size_t)w[1] };

	if (w[1] < 2048 || w[1] > ((size_t)1 << 21) || !stamp_ok(s)) {
		atomic_fetch_add(&corrupt, 1);
		return;
	}
	gostack_allocator_free(A[k], s);
}

static void *
worker(void *arg)
{
	uint64_t rng = (uintptr_t)arg;
	int life = 500 + (int)(rnd(&rng) % 3000);
	struct { gostack_t s; int k; } held[16];
	int nheld = 0;

	for (int i = 0; i < life && !atomic_load_explicit(&stop_epoch, memory_order_relaxed); i++) {
		int k = (int)(rnd(&rng) % NALLOC);
		uint64_t r = rnd(&rng);
		size_t size = r % 32 == 0 ? ((size_t)32768 << (r >> 8) % 7) : ((size_t)2048 << (r >> 8) % 4);
		gostack_t s = gostack_allocator_alloc(A[k], size);

		if (s.lo == 0) {
			atomic_fetch_add(&failed_allocs, 1);
			continue;
		}
		stamp(s);
		if (r % 3 == 0 && nheld < 16) {
			held[nheld].s = s;
			held[nheld].k = k;
			nheld++;
		} else {
			uintptr_t old = atomic_exchange(&slot[(r >> 20) % SLOTS], s.lo | (uintptr_t)k);

			if (old != 0)
				free_tagged(old);
		}
		if (nheld > 0 && r % 5 == 0) {
			nheld--;
			if (!stamp_ok(held[nheld].s))
				atomic_fetch_add(&corrupt, 1);
			gostack_allocator_free(A[held[nheld].k], held[nheld].s);
		}
		if (r % 4096 == 7)
			sched_yield();
		atomic_fetch_add_explicit(&ops, 1, memory_order_relaxed);
	}
	while (nheld > 0) {
		nheld--;
		if (!stamp_ok(held[nheld].s))
			atomic_fetch_add(&corrupt, 1);
		gostack_allocator_free(A[held[nheld].k], held[nheld].s);
	}
	return NULL;   /* exits without flushing */
}

static long rss_kib(void);
static _Atomic long reclaims, rss_peak;

static void *
reclaimer(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop_epoch)) {
		long r = rss_kib();

		if (r > atomic_load(&rss_peak))
			atomic_store(&rss_peak, r);
		for (int k = 0; k < NALLOC; k++) {
			gostack_stats_t st;

			gostack_allocator_reclaim(A[k]);
			gostack_allocator_stats(A[k], &st);
		}
		atomic_fetch_add(&reclaims, 1);
		usleep(20000);
	}
	return NULL;
}

static long
rss_kib(void)
{
	long b = proc_rss_bytes();

	return b < 0 ? -1 : b / 1024;
}

int
main(int argc, char **argv)
{
	double seconds = 60, epoch = 10;
	int nthreads = 32, bad = 0;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--seconds") == 0)
			seconds = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--threads") == 0)
			nthreads = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--epoch") == 0)
			epoch = atof(argv[i + 1]);
	}
	gostack_config_t cfg[NALLOC] = {
		{ .backend = GOSTACK_BACKEND_LOCKFREE }, { .backend = GOSTACK_BACKEND_LOCKFREE, .no_cache = true },
		{ .backend = GOSTACK_BACKEND_MUTEX }, { .backend = GOSTACK_BACKEND_MUTEX, .no_cache = true },
		/* guard pages, and the scavenger making a pass every 10 ms */
		{ .backend = GOSTACK_BACKEND_LOCKFREE, .guard_size = 4096, .decay_ms = 10 },
		{ .backend = GOSTACK_BACKEND_MUTEX, .no_cache = true, .guard_size = 8192, .decay_ms = 10 },
	};
	for (int k = 0; k < NALLOC; k++)
		if ((A[k] = gostack_allocator_new(&cfg[k])) == NULL)
			return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("soak: %.0f s, %d worker threads at a time, epochs of %.0f s, %d allocators\n", seconds, nthreads,
	    epoch, NALLOC);
	double t0 = now();
	long rss_first = -1, rss_max = 0, total_threads = 0;
	int epochs = 0;

	while (now() - t0 < seconds) {
		pthread_t *th = calloc((size_t)nthreads, sizeof *th), rec;
		double te = now();
		long threads = 0;
		uint64_t seed = (uint64_t)epochs * 1000003u;

		atomic_store(&stop_epoch, 0);
		pthread_create(&rec, NULL, reclaimer, NULL);
		for (int i = 0; i < nthreads; i++, threads++)
			pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(++seed));
		/* thread churn: replace workers as they finish */
		while (now() - te < epoch) {
			for (int i = 0; i < nthreads; i++) {
				if (pthread_tryjoin_np(th[i], NULL) == 0) {
					pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(++seed));
					threads++;
				}
			}
			usleep(1000);
		}
		atomic_store(&stop_epoch, 1);
		for (int i = 0; i < nthreads; i++)
			pthread_join(th[i], NULL);
		pthread_join(rec, NULL);
		free(th);
		for (int i = 0; i < SLOTS; i++) {
			uintptr_t t = atomic_exchange(&slot[i], 0);

			if (t != 0)
				free_tagged(t);
		}
		gostack_thread_flush();
		/* quiescent: every allocator empty, balanced, and empty after reclaim */
		uint64_t allocs = 0;

		for (int k = 0; k < NALLOC; k++) {
			gostack_stats_t st;

			gostack_allocator_stats(A[k], &st);
			allocs += st.allocs;
			if (st.inuse_bytes != 0 || st.allocs != st.frees || st.cached_bytes != 0 ||
			    st.inuse_bytes + st.cached_bytes + st.pooled_bytes != st.mapped_bytes) {
				printf("soak: epoch %d allocator %d: stats allocs %ju frees %ju inuse %zu cached %zu pooled %zu mapped %zu\n",
				    epochs, k, (uintmax_t)st.allocs, (uintmax_t)st.frees, st.inuse_bytes, st.cached_bytes,
				    st.pooled_bytes, st.mapped_bytes);
				bad = 1;
			}
			gostack_allocator_reclaim(A[k]);
			gostack_allocator_stats(A[k], &st);
			if (st.mapped_bytes != 0 || st.pooled_bytes != 0) {
				printf("soak: epoch %d allocator %d: %zu bytes mapped after reclaim\n", epochs, k, st.mapped_bytes);
				bad = 1;
			}
		}
		long rss = rss_kib();

		if (rss_first < 0)
			rss_first = rss;
		if (rss > rss_max)
			rss_max = rss;
		total_threads += threads;
		epochs++;
		printf("soak: t=%5.0fs epoch %d: %ld threads, %ld stack ops so far, %ju allocs total, %ld reclaims, "
		    "%ld corrupt, %ld failed allocs, RSS peak %ld KiB, after reclaim %ld KiB\n",
		    now() - t0, epochs, threads, atomic_load(&ops), (uintmax_t)allocs, atomic_load(&reclaims),
		    atomic_load(&corrupt), atomic_load(&failed_allocs), atomic_load(&rss_peak), rss);
		if (atomic_load(&corrupt) != 0 || atomic_load(&failed_allocs) != 0)
			bad = 1;
		if (rss > rss_first + 64 * 1024 || atomic_load(&rss_peak) > 1024 * 1024) {
			printf("soak: RSS grew from %ld KiB to %ld KiB (peak %ld KiB)\n", rss_first, rss, atomic_load(&rss_peak));
			bad = 1;
		}
		if (bad)
			break;
	}
	printf("soak: %s after %.0f s: %d epochs, %ld threads created, %ld stack operations, peak RSS after reclaim %ld KiB\n",
	    bad ? "FAILED" : "passed", now() - t0, epochs, total_threads, atomic_load(&ops), rss_max);
	for (int k = 0; k < NALLOC; k++)
		if (gostack_allocator_delete(A[k]) != 0)
			bad = 1;
	printf("%d passed, %d failed\n", bad ? 0 : 1, bad ? 1 : 0);
	return bad;
}
