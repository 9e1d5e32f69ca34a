/*
 * tests/test_memory.c: memory that tells the truth. Built against the
 * test-hooks library (it counts the OS calls gostack makes).
 *
 *   heap_dirty_exact     heap_dirty_bytes after scripted frees: exactly the
 *                        freed spans' bytes (32 KiB per pool span, the
 *                        span's size for a large one), whatever block the
 *                        span was split from; 0 after reclaim
 *   refill_no_syscall    a span emptied and refilled in a loop, at every
 *                        span position from 0 to 80 (across every buddy
 *                        boundary): no OS call per operation (counted, not
 *                        timed)
 *   bulk_churn           thousands of large stacks (and small ones without
 *                        a cache) allocated and freed together, rounds over
 *                        rounds: /proc/self/maps flat after the first round,
 *                        RSS not growing, RSS within what the stats hold
 *   untouched_rss        what a stack costs that its coroutine touched only
 *                        at the top (or not at all): one page, or none
 */
#include <stdatomic.h>
#include <sys/mman.h>
#include <unistd.h>

#include "test.h"

extern _Atomic long gostack__test_os_calls, gostack__test_decommits;

static gostack_allocator_t *
new_alloc(bool no_cache, size_t guard, int decay_ms)
{
	gostack_config_t cfg = test_cfg;

	cfg.no_cache = no_cache;
	cfg.guard_size = guard;
	cfg.decay_ms = decay_ms;
	gostack_allocator_t *a = gostack_allocator_new(&cfg);

	if (a == NULL) {
		fprintf(stderr, "gostack_allocator_new: %s\n", strerror(errno));
		exit(2);
	}
	return a;
}

TEST(heap_dirty_exact)
{
	gostack_config_t cfg = test_cfg;

	cfg.no_cache = true;
	cfg.decay_ms = -1;        /* no scavenger: only what frees do */
	cfg.no_percpu = true;     /* nothing kept per CPU ahead of the pools and the heap */
	gostack_allocator_t *a = gostack_allocator_new(&cfg);

	REQUIRE(a != NULL);
	gostack_t s[72];

	gostack_allocator_reclaim(a);
	CHECK_EQ(test_detail(a).heap_dirty_bytes, 0);
	/* Pool spans: the mutex pools give an emptied span to the heap at once
	 * (Go's freeManual); the first one was split from the arena's largest
	 * free block, which must not make the whole block look dirty. */
	if (test_cfg.backend == GOSTACK_BACKEND_MUTEX) {
		for (int i = 0; i < 8; i++)
			s[i] = gostack_allocator_alloc(a, 16 * KiB);   /* 2 per span: 4 spans */
		for (int i = 0; i < 8; i++) {
			gostack_allocator_free(a, s[i]);
			CHECK_EQ(test_detail(a).heap_dirty_bytes, (size_t)(i + 1) / 2 * 32 * KiB);
		}
		gostack_allocator_reclaim(a);
		CHECK_EQ(test_detail(a).heap_dirty_bytes, 0);
	}
	/* Large spans past stackLarge's 64 MiB go to the heap on both
	 * backends: 64 kept, the next ones dirty, 1 MiB each. */
	for (int i = 0; i < 67; i++)
		REQUIRE((s[i] = gostack_allocator_alloc(a, MiB)).lo != 0);
	for (int i = 0; i < 67; i++)
		gostack_allocator_free(a, s[i]);
	CHECK_EQ(test_detail(a).heap_dirty_bytes, 3 * MiB);
	/* One freed 32 KiB span next to clean memory: 32 KiB, not its block. */
	s[0] = gostack_allocator_alloc(a, 32 * KiB);
	s[1] = gostack_allocator_alloc(a, 32 * KiB);
	gostack_allocator_free(a, s[0]);
	gostack_allocator_free(a, s[1]);   /* both kept by stackLarge (room left? no: full) */
	CHECK_EQ(test_detail(a).heap_dirty_bytes, 3 * MiB + 64 * KiB);
	gostack_allocator_reclaim(a);
	CHECK_EQ(test_detail(a).heap_dirty_bytes, 0);
	test_check_balance(a, "heap_dirty_exact");
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

TEST(refill_no_syscall)
{
	gostack_allocator_t *a = new_alloc(true, 0, -1);
	static gostack_t held[2 * 81];
	const int iters = 2000;

	for (int pos = 0; pos <= 80; pos++) {
		for (int i = 0; i < 2 * pos; i++)          /* pos full spans of 16 KiB stacks */
			REQUIRE((held[i] = gostack_allocator_alloc(a, 16 * KiB)).lo != 0);
		/* Warm: the span at this position exists once. */
		gostack_allocator_free(a, gostack_allocator_alloc(a, 16 * KiB));
		long calls = atomic_load(&gostack__test_os_calls) + atomic_load(&gostack__test_decommits);

		for (int k = 0; k < iters; k++) {
			gostack_t x = gostack_allocator_alloc(a, 16 * KiB);   /* refills (mutex: a span from the heap) */

			REQUIRE(x.lo != 0);
			gostack_allocator_free(a, x);                       /* empties it (mutex: back to the heap) */
		}
		calls = atomic_load(&gostack__test_os_calls) + atomic_load(&gostack__test_decommits) - calls;
		/* At most one scavenge per 16 MiB freed (512 spans): a few calls,
		 * never one per operation. */
		if (calls > iters / 100) {
			fprintf(stderr, "position %d: %ld OS calls for %d empty-and-refill rounds\n", pos, calls, iters);
			CHECK(calls <= iters / 100);
		}
		for (int i = 0; i < 2 * pos; i++)
			gostack_allocator_free(a, held[i]);
	}
	test_check_balance(a, "refill_no_syscall");
	gostack_allocator_reclaim(a);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

struct churn_round { double maps, rss_live, rss_free; size_t mapped, dirty; };

/* n stacks of size, the top 4 KiB of each touched, all freed; rounds times. */
static void
churn(const char *what, bool no_cache, size_t size, size_t n, size_t guard)
{
	gostack_allocator_t *a = new_alloc(no_cache, guard, -1);
	gostack_t *s = calloc(n, sizeof *s);
	enum { ROUNDS = 6 };
	struct churn_round r[ROUNDS];
	long rss0 = test_rss_bytes();
	size_t touch = size < 4 * KiB ? size : 4 * KiB;

	REQUIRE(s != NULL);
	for (int k = 0; k < ROUNDS; k++) {
		gostack_stats_detail_t d;

		for (size_t i = 0; i < n; i++) {
			s[i] = gostack_allocator_alloc(a, size);
			REQUIRE(s[i].lo != 0);
			memset((void *)(s[i].hi - touch), 1, touch);
		}
		r[k].rss_live = (double)test_rss_bytes();
		for (size_t i = 0; i < n; i++)
			gostack_allocator_free(a, s[i]);
		gostack_thread_flush();
		r[k].maps = (double)test_maps_lines();
		r[k].rss_free = (double)test_rss_bytes();
		gostack_allocator_stats_detail(a, &d);
		r[k].mapped = d.total.mapped_bytes;
		r[k].dirty = d.heap_dirty_bytes;
		CHECK_EQ(d.total.inuse_bytes, 0);
		CHECK_EQ(d.total.cached_bytes + d.total.pooled_bytes, d.total.mapped_bytes);
	}
	printf("     %-28s maps %4.0f -> %4.0f, RSS live %6.1f -> %6.1f MiB, after free %6.1f -> %6.1f MiB "
	    "(mapped %5.1f MiB, heap dirty %5.1f MiB)\n", what, r[0].maps, r[ROUNDS - 1].maps,
	    (r[0].rss_live - rss0) / MiB, (r[ROUNDS - 1].rss_live - rss0) / MiB, (r[0].rss_free - rss0) / MiB,
	    (r[ROUNDS - 1].rss_free - rss0) / MiB, (double)r[ROUNDS - 1].mapped / MiB,
	    (double)r[ROUNDS - 1].dirty / MiB);
	for (int k = 1; k < ROUNDS; k++) {
		/* No mapping per stack or per retirement: flat after round 0
		 * (a few lines of slack for the process's own mappings). */
		CHECK(r[k].maps <= r[0].maps + 4);
		if (!test_sanitized()) {
			/* Memory does not grow round over round... */
			CHECK(r[k].rss_live <= r[1].rss_live + 8.0 * MiB);
			CHECK(r[k].rss_free <= r[1].rss_free + 8.0 * MiB);
			/* ...and what stays resident is what the stats say gostack
			 * holds (pooled, cached, heap dirty), plus slack for metadata. */
			CHECK(r[k].rss_free - rss0 <= (double)(r[k].mapped + r[k].dirty) + 8.0 * MiB);
		}
	}
	gostack_allocator_reclaim(a);
	if (!test_sanitized())
		CHECK(test_rss_bytes() <= rss0 + 8 * (long)MiB);
	CHECK_EQ(gostack_allocator_delete(a), 0);
	free(s);
}

TEST(bulk_churn)
{
	size_t n = test_sanitized() ? 3000 : 20000;

	churn("64 KiB stacks", false, 64 * KiB, n, 0);
	churn("64 KiB stacks, 4 KiB guards", false, 64 * KiB, n, 4096);
	churn("256 KiB stacks", false, 256 * KiB, n / 4, 0);
	churn("8 KiB stacks, no cache", true, 8 * KiB, n, 0);
	churn("16 KiB stacks, cached", false, 16 * KiB, n, 0);
}

/* RSS per stack of n stacks of size, each touched in its top `touch` bytes. */
static double
rss_per_stack(size_t size, size_t touch, size_t n)
{
	gostack_allocator_t *a = new_alloc(false, 0, -1);
	gostack_t *s = calloc(n, sizeof *s);
	long rss0;
	double per;

	if (s == NULL)
		return -1;
	gostack_allocator_reclaim(a);
	rss0 = test_rss_bytes();
	for (size_t i = 0; i < n; i++) {
		s[i] = gostack_allocator_alloc(a, size);
		if (s[i].lo == 0)
			return -1;
		if (touch != 0)
			memset((void *)(s[i].hi - touch), 1, touch);
	}
	per = (double)(test_rss_bytes() - rss0) / (double)n;
	for (size_t i = 0; i < n; i++)
		gostack_allocator_free(a, s[i]);
	gostack_thread_flush();
	gostack_allocator_reclaim(a);
	gostack_allocator_delete(a);
	free(s);
	return per;
}

TEST(untouched_rss)
{
	static const size_t sizes[] = { 2 * KiB, 4 * KiB, 8 * KiB, 16 * KiB, 64 * KiB, 256 * KiB };
	long page = sysconf(_SC_PAGESIZE);

	if (test_sanitized() || page != 4096) {
		test_skip("sanitized build or pages of %ld bytes", page);
		return;
	}
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t n = sizes[i] >= 64 * KiB ? 1000 : 4000;
		double none = rss_per_stack(sizes[i], 0, n), top = rss_per_stack(sizes[i], 1024, n);
		/* A small stack's link is in its top page: that page and nothing
		 * else (2 KiB stacks share a page). A large stack is never
		 * written by gostack. Plus the out-of-line metadata: one span
		 * struct (under 160 bytes) per 32 KiB unit. */
		double meta = (double)(sizes[i] < 32 * KiB ? 32 * KiB : sizes[i]) / (32 * KiB) * 160 *
		    (sizes[i] < 32 * KiB ? (double)sizes[i] / (32 * KiB) : 1);
		double want_none = (sizes[i] < 32 * KiB ? (sizes[i] < 4096 ? (double)sizes[i] : 4096.0) : 0.0) + meta;
		double want_top = (sizes[i] < 4096 ? (double)sizes[i] : 4096.0) + meta;

		printf("     %4zu KiB stacks: RSS per stack %6.0f B untouched, %6.0f B with the top 1 KiB touched\n",
		    sizes[i] >> 10, none, top);
		CHECK(none >= 0 && none <= want_none + 64);
		CHECK(top >= 0 && top <= want_top + 64);
	}
}

TEST_MAIN(T(heap_dirty_exact), T(refill_no_syscall), T(bulk_churn), T(untouched_rss))
