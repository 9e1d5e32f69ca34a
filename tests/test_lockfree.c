/*
 * Tests aimed at the lock-free pools' two hazards, built against the
 * test-hooks variant of the library (GOSTACK_TEST_HOOKS: a sched_yield()
 * injected between a batch pop's snapshot and its CAS, one time in
 * GOSTACK_TEST_YIELD):
 *
 *   reclaim_torture  threads refill and flush (batch pops and chain pushes)
 *                    at full speed while another thread keeps sweeping and
 *                    retiring spans. The test hook gostack__test_guard_free
 *                    makes free heap memory fault on any access (as it may
 *                    once a guarded allocator reuses it), so a pop that
 *                    touches a retired span after it went back to the heap
 *                    crashes. Built with GOSTACK_TEST_NO_GRACE spans go back
 *                    without a grace period and this test must crash.
 *   aba              the same traffic with no reclamation and the per-CPU
 *                    tier off (so that every refill pops the global lists),
 *                    every stack stamped: built with GOSTACK_TEST_UNSAFE_POP
 *                    (a single-width CAS, ABA-prone) it must see a stack
 *                    owned twice or crash.
 *   percpu           the per-CPU tier (lockfree/percpu.c) under fire: no-cache
 *                    churners (every operation goes through the tier) on
 *                    stamped stacks, a migrator re-pinning them to random
 *                    CPUs, a signaller interrupting them (each signal aborts
 *                    a critical section in flight), and a drainer (reclaim:
 *                    stop, membarrier fence, empty) all at once; yields
 *                    injected between reading the CPU and the CS. A stack
 *                    in two bins, or in a bin and handed out, shows as a
 *                    stamp overwritten or stats out of balance. Small and
 *                    large stacks (the large classes' bins) alike.
 *   large_percpu     the large bins' accounting, reuse, bound and decay.
 *   transfer         stacks allocated on one CPU and freed on another, so
 *                    that they travel in transfer batches, with reclaims
 *                    draining the batches meanwhile: stamps, balance, and
 *                    nothing left mapped at the end.
 * All must pass on the real code.
 */
#define _GNU_SOURCE 1   /* pthread_setaffinity_np, CPU_SET */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

/* mheap.c, test-hooks builds: free heap memory is a guard region. */
extern _Atomic int gostack__test_guard_free;

static gostack_allocator_t *A;
static bool mix_large;   /* percpu: churners take large stacks too (32 KiB .. 1 MiB) */
static bool tier_off;    /* aba: the global ck_stacks alone (the per-CPU tier would absorb their traffic) */
static _Atomic int stop;
static _Atomic long corrupt, ops, sweeps;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *
churner(void *arg)
{
	uint64_t rng = (uintptr_t)arg * 0x9e3779b97f4a7c15ull;
	gostack_t s[24];

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		int order = (int)(test_rand(&rng) % (mix_large ? 10 : 4));   /* 4 ..: the large classes */
		int n = 1 + (int)(test_rand(&rng) % 24);   /* > one refill: several batch pops */

		for (int i = 0; i < n; i++) {
			s[i] = gostack_allocator_alloc(A, (size_t)2048 << (order < 4 ? order : order + 1));
			if (s[i].lo == 0) {
				atomic_fetch_add(&corrupt, 1);
				n = i;
				break;
			}
			stamp_set(s[i], ((uint64_t)(uintptr_t)arg << 48) ^ (uint64_t)i ^ s[i].lo);
		}
		if (test_rand(&rng) % 4 == 0)
			sched_yield();
		for (int i = 0; i < n; i++) {
			if (!stamp_ok(s[i], ((uint64_t)(uintptr_t)arg << 48) ^ (uint64_t)i ^ s[i].lo))
				atomic_fetch_add(&corrupt, 1);
			gostack_allocator_free(A, s[i]);
		}
		gostack_thread_flush();                    /* chain pushes back to the pool */
		atomic_fetch_add_explicit(&ops, n, memory_order_relaxed);
	}
	return NULL;
}

static void *
retirer(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		gostack_allocator_reclaim(A);
		atomic_fetch_add_explicit(&sweeps, 1, memory_order_relaxed);
	}
	return NULL;
}

static _Atomic long migrations, signals;
static pthread_t workers[32];
static int nworkers;

static void on_usr1(int sig) { (void)sig; }

/* Re-pins a random worker to a random CPU, and signals another, in a loop. */
static void *
harasser(void *arg)
{
	uint64_t rng = 12345;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	(void)arg;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET((int)(test_rand(&rng) % (uint64_t)(ncpu > 0 ? ncpu : 1)), &set);
		if (pthread_setaffinity_np(workers[test_rand(&rng) % (uint64_t)nworkers], sizeof set, &set) == 0)
			atomic_fetch_add_explicit(&migrations, 1, memory_order_relaxed);
		if (pthread_kill(workers[test_rand(&rng) % (uint64_t)nworkers], SIGUSR1) == 0)
			atomic_fetch_add_explicit(&signals, 1, memory_order_relaxed);
		usleep(50);
	}
	return NULL;
}

static void
run_with(bool with_retirer, double seconds, bool no_cache, bool harass)
{
	int nw = test_sanitized() ? 6 : 12;
	pthread_t *w = workers, r, h;
	gostack_config_t cfg = test_cfg;
	gostack_stats_t st;

	nworkers = nw;
	cfg.no_cache = no_cache;   /* false: refill and flush (batch pops and chain pushes) */
	cfg.no_percpu = tier_off;
	A = gostack_allocator_new(&cfg);
	REQUIRE(A != NULL);
	atomic_store(&stop, 0);
	atomic_store(&corrupt, 0);
	atomic_store(&ops, 0);
	atomic_store(&sweeps, 0);
	for (int i = 0; i < nw; i++)
		pthread_create(&w[i], NULL, churner, (void *)(uintptr_t)(i + 1));
	if (with_retirer)
		pthread_create(&r, NULL, retirer, NULL);
	if (harass) {
		struct sigaction sa;

		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_usr1;
		sa.sa_flags = SA_RESTART;
		sigaction(SIGUSR1, &sa, NULL);
		pthread_create(&h, NULL, harasser, NULL);
	}
	double t0 = now();

	while (now() - t0 < seconds)
		usleep(20000);
	atomic_store(&stop, 1);
	for (int i = 0; i < nw; i++)
		pthread_join(w[i], NULL);
	if (with_retirer)
		pthread_join(r, NULL);
	if (harass)
		pthread_join(h, NULL);
	gostack_allocator_stats(A, &st);
	printf("     %d threads, %.1f s: %ld stacks, %ld sweeps, %ld corrupt\n", nw, seconds,
	    atomic_load(&ops), atomic_load(&sweeps), atomic_load(&corrupt));
	CHECK_EQ(atomic_load(&corrupt), 0);
	CHECK_EQ(st.inuse_bytes, 0);
	CHECK_EQ(st.allocs, st.frees);
	test_check_balance(A, "lockfree");
	gostack_allocator_reclaim(A);
	gostack_allocator_stats(A, &st);
	CHECK_EQ(st.mapped_bytes, 0);
	CHECK_EQ(gostack_allocator_delete(A), 0);
}

static void
run(bool with_retirer, double seconds)
{
	run_with(with_retirer, seconds, false, false);
}

TEST(percpu)
{
	gostack_config_t cfg = test_cfg;
	gostack_stats_detail_t d;

	cfg.no_cache = true;
	gostack_allocator_t *probe = gostack_allocator_new(&cfg);

	REQUIRE(probe != NULL);
	gostack_allocator_stats_detail(probe, &d);
	CHECK_EQ(gostack_allocator_delete(probe), 0);
	if (!d.percpu) {
		test_skip("no per-CPU tier here (rseq off or unavailable)");
		return;
	}
	atomic_store(&migrations, 0);
	atomic_store(&signals, 0);
	run_with(true, 2.0 * test_scale, true, true);    /* every operation through the tier */
	mix_large = true;                                /* the large bins too (fewer operations) */
	run_with(true, 1.0 * test_scale, true, true);
	mix_large = false;
	run_with(true, 1.0 * test_scale, false, true);   /* refills and releases through it */
	printf("     %ld migrations, %ld signals\n", atomic_load(&migrations), atomic_load(&signals));
	CHECK(atomic_load(&migrations) > 0);
}

/* The large bins, on one CPU (the thread pinned): a freed large stack is
 * kept in this CPU's bin of its class (counted as pooled and per-CPU) and
 * handed out again from there; a class's bin holds what its bound says (one
 * 1 MiB stack), the rest goes on to stackLarge; reclaim drains the bins,
 * and decay drains them by itself once they sit idle. */
TEST(large_percpu)
{
	gostack_config_t cfg = test_cfg;
	cpu_set_t set, old;

	cfg.decay_ms = -1;
	gostack_allocator_t *a = gostack_allocator_new(&cfg);

	REQUIRE(a != NULL);
	gostack_stats_detail_t d;

	gostack_allocator_stats_detail(a, &d);
	if (!d.percpu) {
		test_skip("no per-CPU tier here (rseq off or unavailable)");
		CHECK_EQ(gostack_allocator_delete(a), 0);
		return;
	}
	REQUIRE(pthread_getaffinity_np(pthread_self(), sizeof old, &old) == 0);
	CPU_ZERO(&set);
	CPU_SET(sched_getcpu(), &set);
	REQUIRE(pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0);

	gostack_t x = gostack_allocator_alloc(a, 64 * KiB), m[4];

	REQUIRE(x.lo != 0);
	gostack_allocator_free(a, x);
	CHECK_EQ(test_detail(a).percpu_bytes, 64 * KiB);
	gostack_allocator_stats_detail(a, &d);
	CHECK_EQ(d.total.pooled_bytes, 64 * KiB);
	CHECK_EQ(gostack_allocator_alloc(a, 40000).lo, x.lo);   /* from this CPU's bin */
	CHECK_EQ(test_detail(a).percpu_bytes, 0);
	gostack_allocator_free(a, x);
	for (int i = 0; i < 4; i++)
		REQUIRE((m[i] = gostack_allocator_alloc(a, MiB)).lo != 0);
	for (int i = 0; i < 4; i++)
		gostack_allocator_free(a, m[i]);
	CHECK_EQ(test_detail(a).percpu_bytes, 64 * KiB + MiB);   /* one 1 MiB span per CPU, three on stackLarge */
	gostack_allocator_stats_detail(a, &d);
	CHECK_EQ(d.total.pooled_bytes, 64 * KiB + 4 * MiB);
	CHECK_EQ(d.total.mapped_bytes, 64 * KiB + 4 * MiB);
	test_check_balance(a, "large_percpu");
	CHECK(gostack_allocator_reclaim(a) >= 64 * KiB + 4 * MiB);
	CHECK_EQ(test_detail(a).percpu_bytes, 0);
	gostack_allocator_stats_detail(a, &d);
	CHECK_EQ(d.total.mapped_bytes, 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);

	/* Decay: idle bins drain by themselves, and their spans go back. */
	cfg.decay_ms = 20;
	a = gostack_allocator_new(&cfg);
	REQUIRE(a != NULL);
	REQUIRE((x = gostack_allocator_alloc(a, 256 * KiB)).lo != 0);
	gostack_allocator_free(a, x);
	CHECK_EQ(test_detail(a).percpu_bytes, 256 * KiB);
	double t0 = now();

	do {
		usleep(10000);
		gostack_allocator_stats_detail(a, &d);
	} while (d.total.mapped_bytes != 0 && now() - t0 < 10.0);
	printf("     a 256 KiB stack idle in its per-CPU bin: unmapped after %.0f ms (decay 20 ms)\n",
	    (now() - t0) * 1e3);
	CHECK_EQ(d.percpu_bytes, 0);
	CHECK_EQ(d.total.mapped_bytes, 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
	pthread_setaffinity_np(pthread_self(), sizeof old, &old);
}

/*
 * Transfer batches (lockfree/transfer.c): a producer pinned to one CPU
 * allocates (cached: refills), a consumer pinned to another frees what it
 * got (releases), so the consumer's bins overflow into batches and the
 * producer's bins refill from them, while a retirer keeps reclaiming (each
 * reclaim drains the bins and the batches into its sweep). Every stack is
 * stamped by the producer and checked by the consumer: a stack handed out
 * twice, or lost on the way, shows as a bad stamp, stats out of balance, or
 * memory left mapped after the last reclaim.
 */
#define XFER_RING 4096
static gostack_t xfer_ring[XFER_RING];
static _Atomic unsigned long xfer_head, xfer_tail;   /* produced, consumed */
static _Atomic int xfer_done;                        /* the producer returned */

/* The calling thread pinned to cpu; false if the kernel refused. */
static bool
pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

static void *
xfer_producer(void *arg)
{
	uint64_t rng = 99;

	pin_to((int)(intptr_t)arg);
	for (unsigned long i = 0; !atomic_load_explicit(&stop, memory_order_relaxed); i++) {
		/* Acquire: pairs with the consumer's release of the slots it freed. */
		while (i - atomic_load_explicit(&xfer_tail, memory_order_acquire) >= XFER_RING)
			if (atomic_load_explicit(&stop, memory_order_relaxed))
				goto out;
		gostack_t st = gostack_allocator_alloc(A, (size_t)2048 << (test_rand(&rng) % 4));

		if (st.lo == 0) {
			atomic_fetch_add(&corrupt, 1);
			break;
		}
		stamp_set(st, i ^ st.lo);
		xfer_ring[i % XFER_RING] = st;
		/* Release: the stamp and the slot before the consumer's acquire. */
		atomic_store_explicit(&xfer_head, i + 1, memory_order_release);
	}
out:
	atomic_store_explicit(&xfer_done, 1, memory_order_release);
	return NULL;
}

static void *
xfer_consumer(void *arg)
{
	unsigned long i = 0;

	pin_to((int)(intptr_t)arg);
	for (;;) {
		/* Acquire: pairs with the producer's release of xfer_head. */
		unsigned long h = atomic_load_explicit(&xfer_head, memory_order_acquire);

		if (i == h) {
			/* Acquire: the producer's last publication is before its done. */
			if (atomic_load_explicit(&xfer_done, memory_order_acquire) &&
			    i == atomic_load_explicit(&xfer_head, memory_order_acquire))
				break;
			continue;
		}
		for (; i < h; i++) {
			gostack_t st = xfer_ring[i % XFER_RING];

			if (!stamp_ok(st, i ^ st.lo))
				atomic_fetch_add(&corrupt, 1);
			gostack_allocator_free(A, st);
		}
		/* Release: the slots are free for the producer again. */
		atomic_store_explicit(&xfer_tail, i, memory_order_release);
		atomic_fetch_add_explicit(&ops, 1, memory_order_relaxed);
	}
	gostack_thread_flush();
	return NULL;
}

TEST(transfer)
{
	gostack_config_t cfg = test_cfg;
	gostack_stats_detail_t d;
	gostack_stats_t st;
	cpu_set_t mine;
	int cpus[2], nc = 0;
	pthread_t p, c, r;

	cfg.decay_ms = -1;
	A = gostack_allocator_new(&cfg);
	REQUIRE(A != NULL);
	gostack_allocator_stats_detail(A, &d);
	REQUIRE(pthread_getaffinity_np(pthread_self(), sizeof mine, &mine) == 0);
	for (int i = 0; i < CPU_SETSIZE && nc < 2; i++)
		if (CPU_ISSET(i, &mine))
			cpus[nc++] = i;
	if (!d.percpu || nc < 2) {
		test_skip(!d.percpu ? "no per-CPU tier here (rseq off or unavailable)" : "fewer than 2 CPUs to run on");
		CHECK_EQ(gostack_allocator_delete(A), 0);
		return;
	}
	atomic_store(&stop, 0);
	atomic_store(&corrupt, 0);
	atomic_store(&ops, 0);
	atomic_store(&sweeps, 0);
	atomic_store(&xfer_head, 0);
	atomic_store(&xfer_tail, 0);
	atomic_store(&xfer_done, 0);
	pthread_create(&p, NULL, xfer_producer, (void *)(intptr_t)cpus[0]);
	pthread_create(&c, NULL, xfer_consumer, (void *)(intptr_t)cpus[1]);
	pthread_create(&r, NULL, retirer, NULL);
	usleep((useconds_t)(1.5e6 * test_scale));
	atomic_store(&stop, 1);
	pthread_join(p, NULL);
	pthread_join(c, NULL);
	pthread_join(r, NULL);
	printf("     %lu stacks from CPU %d to CPU %d, %ld reclaims, %ld corrupt\n", atomic_load(&xfer_head), cpus[0],
	    cpus[1], atomic_load(&sweeps), atomic_load(&corrupt));
	CHECK_EQ(atomic_load(&corrupt), 0);
	CHECK(atomic_load(&xfer_head) > 0);
	CHECK_EQ(atomic_load(&xfer_tail), atomic_load(&xfer_head));
	/* Whether batches are still waiting when the threads stop depends on
	 * timing; this leaves some for certain: a burst freed on one CPU with
	 * nobody taking it goes past that CPU's bin into transfer batches,
	 * which the reclaim below must drain for mapped to reach 0. */
	static gostack_t burst[256];

	REQUIRE(pin_to(cpus[0]));
	for (int i = 0; i < 256; i++) {
		burst[i] = gostack_allocator_alloc(A, 8192);
		REQUIRE(burst[i].lo != 0);
	}
	for (int i = 0; i < 256; i++)
		gostack_allocator_free(A, burst[i]);
	gostack_thread_flush();
	REQUIRE(pthread_setaffinity_np(pthread_self(), sizeof mine, &mine) == 0);
	gostack_allocator_stats(A, &st);
	CHECK_EQ(st.inuse_bytes, 0);
	CHECK_EQ(st.allocs, st.frees);
	test_check_balance(A, "transfer");
	gostack_allocator_reclaim(A);
	gostack_allocator_stats(A, &st);
	CHECK_EQ(st.pooled_bytes, 0);
	CHECK_EQ(st.mapped_bytes, 0);
	CHECK_EQ(gostack_allocator_delete(A), 0);
}

/* The tier is on exactly where rseq is: GLIBC_TUNABLES=glibc.pthread.rseq=0
 * (ctest's *.norseq) or GOSTACK_PERCPU=0 turn it off, and the pools still
 * work (the other tests run there too). */
TEST(percpu_state)
{
	gostack_config_t cfg = test_cfg;
	gostack_stats_detail_t d;
	const char *tun = getenv("GLIBC_TUNABLES"), *pc = getenv("GOSTACK_PERCPU");
	bool off = (tun != NULL && strstr(tun, "glibc.pthread.rseq=0") != NULL) || (pc != NULL && strcmp(pc, "0") == 0);

	gostack_allocator_t *a = gostack_allocator_new(&cfg);

	REQUIRE(a != NULL);
	gostack_allocator_stats_detail(a, &d);
	printf("     per-CPU tier: %s (expected %s)\n", d.percpu ? "on" : "off", off ? "off" : "on");
	CHECK_EQ(d.percpu, !off);
	cfg.no_percpu = true;
	gostack_allocator_t *b = gostack_allocator_new(&cfg);

	REQUIRE(b != NULL);
	gostack_allocator_stats_detail(b, &d);
	CHECK_EQ(d.percpu, 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
	CHECK_EQ(gostack_allocator_delete(b), 0);
}

TEST(reclaim_torture)
{
	atomic_store(&gostack__test_guard_free, 1);
	run(true, 2.0 * test_scale);
	atomic_store(&gostack__test_guard_free, 0);
}

TEST(aba)
{
	/* The stacks' lists themselves: with the tier on, bins and transfer
	 * batches serve nearly every refill, and the unsafe-pop variant went
	 * uncaught (0 of 3) once the bins grew to 512 KiB. */
	tier_off = true;
	run(false, 2.0 * test_scale);
	tier_off = false;
}

TEST_MAIN(T(reclaim_torture), T(aba), T(percpu), T(percpu_state), T(large_percpu), T(transfer))
