/*
 * Out of memory: when the OS refuses memory, allocation returns {0, 0} with
 * errno ENOMEM, no stack already handed out is disturbed, no stat drifts,
 * nothing leaks, and allocation works again afterwards. Built against the
 * test-hooks library, whose os.c can fail the Nth OS request (or one in R):
 * arena and arena-table reservations (span creation, large stacks),
 * metadata chunks (allocators, thread caches), mapping a hole back and
 * punching one (the RCU reclamation path). Also a real limit: RLIMIT_AS.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

extern _Atomic long gostack__test_fault_nth, gostack__test_fault_rate, gostack__test_faults;
extern _Atomic long gostack__test_os_calls;

#define MAXHELD 512
static const size_t sizes[] = { 2048, 4096, 8192, 16384, 32768, 65536, 262144, 1 << 20, (size_t)96 << 20 };

struct held { gostack_t s; uint64_t tok; gostack_allocator_t *a; };

static long failures;

static void
check_and_free(struct held *h, int n)
{
	for (int i = 0; i < n; i++) {
		CHECK(stamp_ok(h[i].s, h[i].tok));
		gostack_allocator_free(h[i].a, h[i].s);
	}
}

/* A deterministic mix of every path; failures must be clean ENOMEMs. */
static int
workload(gostack_allocator_t **as, int na, struct held *h, uint64_t seed)
{
	int n = 0;
	uint64_t rng = seed;

	for (int i = 0; i < 240; i++) {
		gostack_allocator_t *a = as[i % na];
		size_t size = sizes[test_rand(&rng) % (sizeof sizes / sizeof sizes[0])];

		errno = 0;
		gostack_t s = gostack_allocator_alloc(a, size);

		if (s.lo == 0) {
			CHECK(s.hi == 0);
			CHECK_EQ(errno, ENOMEM);
			failures++;
		} else if (n < MAXHELD) {
			h[n].s = s;
			h[n].tok = test_rand(&rng);
			h[n].a = a;
			stamp_set(s, h[n].tok);
			n++;
		} else {
			gostack_allocator_free(a, s);
		}
		if (i % 5 == 4 && n > 0) {               /* free one, keep the rest */
			int k = (int)(test_rand(&rng) % (uint64_t)n);

			CHECK(stamp_ok(h[k].s, h[k].tok));
			gostack_allocator_free(h[k].a, h[k].s);
			h[k] = h[--n];
		}
		if (i % 40 == 39)
			gostack_thread_flush();
		if (i % 60 == 59)
			gostack_allocator_reclaim(a);    /* sweeps: holes, then refills */
	}
	return n;
}

static void
balance_and_empty(gostack_allocator_t **as, int na, const char *where)
{
	gostack_thread_flush();
	for (int k = 0; k < na; k++) {
		gostack_stats_t st;

		gostack_allocator_stats(as[k], &st);
		CHECK_EQ(st.inuse_bytes, 0);
		CHECK_EQ(st.allocs, st.frees);
		test_check_balance(as[k], where);
		gostack_allocator_reclaim(as[k]);
		gostack_allocator_stats(as[k], &st);
		CHECK_EQ(st.mapped_bytes, 0);
	}
}

/* Count the OS requests of a clean run, then fail the 1st, 2nd, ... of
 * them, one run each: every request site of the workload fails once. */
TEST(fail_every_request)
{
	gostack_allocator_t *as[3];
	static struct held h[MAXHELD];
	gostack_config_t c = test_cfg;
	long injected0 = atomic_load(&gostack__test_faults);

	as[0] = test_allocator();
	c.no_cache = !c.no_cache;
	as[1] = gostack_allocator_new(&c);
	c.debug = true;
	as[2] = gostack_allocator_new(&c);
	REQUIRE(as[1] != NULL && as[2] != NULL);
	failures = 0;
	for (int warm = 0; warm < 2; warm++) {   /* first-use requests (caches, metadata) out of the way */
		int nw = workload(as, 3, h, 42);

		check_and_free(h, nw);
		balance_and_empty(as, 3, "warm-up");
	}
	for (int k = 0; k < 3; k++)
		gostack_allocator_reclaim(as[k]);
	long calls0 = atomic_load(&gostack__test_os_calls);
	int n0 = workload(as, 3, h, 42);

	check_and_free(h, n0);
	balance_and_empty(as, 3, "clean run");   /* reclaim waits for deferred (call_rcu) releases */
	long calls = atomic_load(&gostack__test_os_calls) - calls0;

	CHECK_EQ(failures, 0);
	printf("     the workload makes %ld OS memory requests\n", calls);
	for (long nth = 1; nth <= calls; nth++) {
		for (int k = 0; k < 3; k++)
			gostack_allocator_reclaim(as[k]);   /* arenas unmapped: the next span needs the OS */
		/* the same window as the counted run: workload, frees, reclaim */
		atomic_store(&gostack__test_fault_nth, nth);
		int n = workload(as, 3, h, 42);

		check_and_free(h, n);
		balance_and_empty(as, 3, "fail_every_request");
		atomic_store(&gostack__test_fault_nth, 0);
		/* and everything works again */
		long f = failures;

		n = workload(as, 3, h, 42);
		CHECK_EQ(failures, f);
		check_and_free(h, n);
		balance_and_empty(as, 3, "after faults");
	}
	long injected = atomic_load(&gostack__test_faults) - injected0;

	printf("     %ld faults injected, %ld allocations failed cleanly\n", injected, failures);
	/* A fault can change the path after it (a failed span is not freed
	 * later; an arena reservation is retried smaller), so a late request
	 * number may not occur in its run; nearly all must. */
	CHECK(injected >= calls - calls / 4 && injected >= 1);
	for (int k = 0; k < 3; k++)
		CHECK_EQ(gostack_allocator_delete(as[k]), 0);
}

/* A process's very first requests (allocator, thread cache, table, arena). */
TEST(fail_first_requests)
{
	for (long nth = 1; nth <= 8; nth++) {
		pid_t pid = fork();

		if (pid == 0) {
			static struct held h[MAXHELD];

			atomic_store(&gostack__test_fault_nth, nth);
			gostack_allocator_t *a = gostack_allocator_new(&test_cfg);

			if (a == NULL) {   /* the allocator's own metadata was refused */
				if (errno != ENOMEM)
					_exit(3);
				atomic_store(&gostack__test_fault_nth, 0);
				a = gostack_allocator_new(&test_cfg);
				if (a == NULL)
					_exit(4);
			}
			int n = workload(&a, 1, h, 7);

			check_and_free(h, n);
			balance_and_empty(&a, 1, "first requests");
			if (gostack_allocator_delete(a) != 0)
				_exit(5);
			_exit(test_failed_checks == 0 ? 0 : 6);
		}
		int status = 0;

		waitpid(pid, &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "fail_first_requests nth=%ld: status %#x\n", nth, status);
			CHECK(0);
		}
	}
}

/* Random faults (one OS request in 8) under 16 threads exchanging stacks. */
static gostack_allocator_t *R;
static _Atomic uintptr_t slots[64];

static void *
random_worker(void *arg)
{
	uint64_t rng = (uintptr_t)arg;

	for (int i = 0; i < 3000; i++) {
		size_t size = sizes[test_rand(&rng) % 8];
		gostack_t s = gostack_allocator_alloc(R, size);

		if (s.lo == 0) {
			if (errno != ENOMEM || s.hi != 0)
				abort();
			continue;
		}
		stamp_set(s, (uint64_t)s.lo ^ 0x5a5a);
		uintptr_t old = atomic_exchange(&slots[test_rand(&rng) % 64], s.lo);

		if (old != 0) {
			uint64_t w[2];

			memcpy(w, (void *)old, sizeof w);
			gostack_t o = { old, old + w[1] };

			if (!stamp_ok(o, (uint64_t)old ^ 0x5a5a))
				abort();
			gostack_allocator_free(R, o);
		}
		if (i % 500 == 0)
			gostack_allocator_reclaim(R);
	}
	return NULL;
}

TEST(random_faults_threads)
{
	pthread_t th[16];
	long injected0 = atomic_load(&gostack__test_faults);

	R = test_allocator();
	atomic_store(&gostack__test_fault_rate, 8);
	for (int i = 0; i < 16; i++)
		pthread_create(&th[i], NULL, random_worker, (void *)(uintptr_t)(i + 1));
	for (int i = 0; i < 16; i++)
		pthread_join(th[i], NULL);
	atomic_store(&gostack__test_fault_rate, 0);
	for (int i = 0; i < 64; i++) {
		uintptr_t lo = atomic_exchange(&slots[i], 0);

		if (lo != 0) {
			uint64_t w[2];

			memcpy(w, (void *)lo, sizeof w);
			gostack_t o = { lo, lo + w[1] };

			CHECK(stamp_ok(o, (uint64_t)lo ^ 0x5a5a));
			gostack_allocator_free(R, o);
		}
	}
	balance_and_empty(&R, 1, "random faults");
	printf("     %ld faults injected\n", atomic_load(&gostack__test_faults) - injected0);
	CHECK(atomic_load(&gostack__test_faults) - injected0 > 0);
	CHECK_EQ(gostack_allocator_delete(R), 0);
}

/* ulimit -v: most of the limit is usable for stacks, the end is a clean ENOMEM. */
TEST(address_space_limit)
{
	if (test_sanitized())
		return;   /* sanitizer runtimes reserve terabytes of shadow */
	pid_t pid = fork();

	if (pid == 0) {
		enum { MAXN = 4096 };
		static gostack_t s[MAXN];
		long pagesz = sysconf(_SC_PAGESIZE), vm = 0, rss;
		FILE *f = fopen("/proc/self/statm", "r");

		if (f == NULL || fscanf(f, "%ld %ld", &vm, &rss) != 2)
			_exit(2);
		fclose(f);
		size_t limit = (size_t)1 << 30;
		struct rlimit rl = { (rlim_t)(vm * pagesz) + limit, (rlim_t)(vm * pagesz) + limit };

		if (setrlimit(RLIMIT_AS, &rl) != 0)
			_exit(2);
		gostack_allocator_t *a = gostack_allocator_new(&test_cfg);
		int n = 0;

		if (a == NULL)
			_exit(3);
		while (n < MAXN) {
			errno = 0;
			s[n] = gostack_allocator_alloc(a, (size_t)1 << 20);
			if (s[n].lo == 0) {
				if (errno != ENOMEM)
					_exit(4);
				break;
			}
			*(volatile char *)s[n].lo = 1;
			n++;
		}
		printf("     RLIMIT_AS +1 GiB: %d MiB of 1 MiB stacks before ENOMEM\n", n);
		if ((size_t)n << 20 < limit * 7 / 10)
			_exit(5);
		for (int i = 0; i < n; i++)
			gostack_allocator_free(a, s[i]);
		gostack_stats_t st;

		gostack_allocator_stats(a, &st);
		if (st.inuse_bytes != 0 || st.inuse_bytes + st.cached_bytes + st.pooled_bytes != st.mapped_bytes)
			_exit(6);
		gostack_allocator_reclaim(a);
		gostack_t again = gostack_allocator_alloc(a, (size_t)1 << 20);   /* works again */

		if (again.lo == 0)
			_exit(7);
		gostack_allocator_free(a, again);
		_exit(0);
	}
	int status = 0;

	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "address_space_limit: child status %#x\n", status);
		CHECK(0);
	}
}

TEST_MAIN(T(fail_first_requests), T(fail_every_request), T(random_faults_threads), T(address_space_limit))
