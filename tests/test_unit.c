/*
 * Unit tests: Go's arithmetic (round2, orders, stacklog2, refill and release
 * amounts), the public API's edge cases, and the exact stats after each step
 * of scripted sequences. Runs against --backend/--nocache from the command
 * line; expectations that depend on the mode say so.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "../core/sizeclass.h"
#include "test.h"

static bool is_mutex(void) { return test_cfg.backend == GOSTACK_BACKEND_MUTEX; }

static size_t
go_round2(size_t x)   /* Go's round2: 1 << ceil(log2 x), by shifting */
{
	size_t s = 0;

	while (((size_t)1 << s) < x)
		s++;
	return (size_t)1 << s;
}

static size_t
want_size(size_t req)   /* round2 of at least fixedStack */
{
	return req <= GOSTACK_MIN_SIZE ? GOSTACK_MIN_SIZE : go_round2(req);
}

TEST(go_arithmetic)
{
	for (size_t n = 1; n <= 4 * MiB; n += (n < 70000 ? 1 : 4093))
		CHECK_EQ(gostack__round2(n), want_size(n));
	for (unsigned s = 11; s <= 30; s++) {
		size_t n = (size_t)1 << s;

		CHECK_EQ(gostack__round2(n), n);
		CHECK_EQ(gostack__round2(n + 1), n == GOSTACK_MAX_SIZE ? 2 * n : 2 * n);
	}
	/* Go: order via `for n2 > fixedStack { order++; n2 >>= 1 }` */
	for (size_t n = 2048; n <= 16384; n <<= 1) {
		int order = 0;

		for (size_t n2 = n; n2 > 2048; n2 >>= 1)
			order++;
		CHECK_EQ(gostack__order(n), order);
		CHECK_EQ(gostack__order_size(order), n);
		CHECK(gostack__is_small(n));
	}
	CHECK(!gostack__is_small(32768));
	/* stacklog2 by Go's loop; 32 KiB -> 2, 64 KiB -> 3, 1 MiB -> 7, 512 MiB -> 16 */
	for (size_t np = 1; np <= ((size_t)1 << 20); np++) {
		unsigned log2 = 0;

		for (size_t x = np; x > 1; x >>= 1)
			log2++;
		if (gostack__stacklog2(np) != log2) {
			CHECK_EQ(gostack__stacklog2(np), log2);
			break;
		}
	}
	CHECK_EQ(gostack__stacklog2((32 * KiB) >> 13), 2);
	CHECK_EQ(gostack__stacklog2((64 * KiB) >> 13), 3);
	CHECK_EQ(gostack__stacklog2(MiB >> 13), 7);
	CHECK_EQ(gostack__stacklog2((512 * MiB) >> 13), 16);
	CHECK_EQ(GOSTACK__LARGE_LISTS, 35);
	/* stacks per pool span 16/8/4/2, per refill 8/4/2/1 */
	for (int o = 0; o < 4; o++) {
		CHECK_EQ(GOSTACK_CACHE_SIZE / gostack__order_size(o), 16 >> o);
		CHECK_EQ((GOSTACK_CACHE_SIZE / 2) / gostack__order_size(o), 8 >> o);
	}
}

TEST(api_sizes_and_alignment)
{
	gostack_allocator_t *a = test_allocator();
	size_t reqs[] = { 1, 100, 2047, 2048, 2049, 3000, 4096, 5000, 8192, 16383, 16384, 16385,
	    32767, 32768, 32769, 65536, 100000, MiB, 3 * MiB, 64 * MiB, 100 * MiB };

	for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
		gostack_t s = gostack_allocator_alloc(a, reqs[i]);
		size_t n = s.hi - s.lo;

		REQUIRE(s.lo != 0);
		CHECK_EQ(n, want_size(reqs[i]));
		CHECK_EQ(s.lo % 16, 0);
		if (n >= 4096)
			CHECK_EQ(s.lo % 4096, 0);
		/* the whole range is readable and writable */
		for (size_t off = 0; off < n; off += (n > MiB ? 4093 * 17 : 512))
			((volatile char *)s.lo)[off] = (char)off;
		((volatile char *)s.hi)[-1] = 1;
		gostack_allocator_free(a, s);
	}
	gostack_t big = gostack_allocator_alloc(a, GOSTACK_MAX_SIZE);   /* committed lazily */

	REQUIRE(big.lo != 0);
	CHECK_EQ(big.hi - big.lo, GOSTACK_MAX_SIZE);
	((volatile char *)big.lo)[0] = 1;
	((volatile char *)big.hi)[-1] = 1;
	gostack_allocator_free(a, big);
	gostack_thread_flush();
	gostack_allocator_reclaim(a);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

TEST(api_errors)
{
	gostack_allocator_t *a = test_allocator();
	size_t bad[] = { 0, GOSTACK_MAX_SIZE + 1, (size_t)1 << 40, SIZE_MAX };

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		errno = 0;
		gostack_t s = gostack_allocator_alloc(a, bad[i]);

		CHECK(s.lo == 0 && s.hi == 0);
		CHECK_EQ(errno, EINVAL);
		errno = 0;
		s = gostack_alloc(bad[i]);
		CHECK(s.lo == 0 && s.hi == 0);
		CHECK_EQ(errno, EINVAL);
	}
	gostack_free((gostack_t){ 0, 0 });
	gostack_allocator_free(a, (gostack_t){ 0, 0 });
	gostack_config_t cfg = { .backend = (gostack_backend_t)42 };

	errno = 0;
	CHECK(gostack_allocator_new(&cfg) == NULL);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(gostack_allocator_delete(gostack_default_allocator()), EINVAL);
	CHECK_EQ(gostack_allocator_delete(NULL), EINVAL);
	gostack_stats_t st;

	gostack_allocator_stats(a, &st);
	CHECK_EQ(st.allocs, 0);
	CHECK_EQ(st.mapped_bytes, 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

static void
expect_stats(gostack_allocator_t *a, uint64_t allocs, uint64_t frees, size_t inuse, size_t cached,
    size_t pooled, size_t mapped, int line)
{
	gostack_stats_t st;

	gostack_allocator_stats(a, &st);
	if (st.allocs != allocs || st.frees != frees || st.inuse_bytes != inuse ||
	    st.cached_bytes != cached || st.pooled_bytes != pooled || st.mapped_bytes != mapped) {
		test_failed_checks++;
		fprintf(stderr, "line %d: stats allocs %ju frees %ju inuse %zu cached %zu pooled %zu mapped %zu; "
		    "want %ju %ju %zu %zu %zu %zu\n", line, (uintmax_t)st.allocs, (uintmax_t)st.frees,
		    st.inuse_bytes, st.cached_bytes, st.pooled_bytes, st.mapped_bytes, (uintmax_t)allocs,
		    (uintmax_t)frees, inuse, cached, pooled, mapped);
	}
}
#define EXPECT_STATS(a, al, fr, in, ca, po, ma) expect_stats(a, al, fr, in, ca, po, ma, __LINE__)

/*
 * The scripted sequence of the issue: 2 KiB stacks through one thread's
 * cache, every step's stats exact. Span: 16 stacks; refill: 8; release at
 * 32 KiB down to 16 KiB.
 */
TEST(stats_script_cached)
{
	if (test_cfg.no_cache)
		return;
	gostack_allocator_t *a = test_allocator();
	gostack_t s[40];

	s[0] = gostack_allocator_alloc(a, 2048);          /* refill: 8 stacks from a new span */
	EXPECT_STATS(a, 1, 0, 2 * KiB, 14 * KiB, 16 * KiB, 32 * KiB);
	for (int i = 1; i < 8; i++)
		s[i] = gostack_allocator_alloc(a, 2048);
	EXPECT_STATS(a, 8, 0, 16 * KiB, 0, 16 * KiB, 32 * KiB);
	s[8] = gostack_allocator_alloc(a, 2048);          /* refill: the span's other 8 */
	EXPECT_STATS(a, 9, 0, 18 * KiB, 14 * KiB, 0, 32 * KiB);
	for (int i = 9; i < 16; i++)
		s[i] = gostack_allocator_alloc(a, 2048);
	s[16] = gostack_allocator_alloc(a, 2048);         /* refill carves a second span */
	EXPECT_STATS(a, 17, 0, 34 * KiB, 14 * KiB, 16 * KiB, 64 * KiB);
	for (int i = 0; i < 9; i++)                       /* cache 14 -> 32 KiB */
		gostack_allocator_free(a, s[i]);
	EXPECT_STATS(a, 17, 9, 16 * KiB, 32 * KiB, 16 * KiB, 64 * KiB);
	gostack_allocator_free(a, s[9]);                  /* release to 16 KiB, then push */
	EXPECT_STATS(a, 17, 10, 14 * KiB, 18 * KiB, 32 * KiB, 64 * KiB);
	for (int i = 10; i < 17; i++)
		gostack_allocator_free(a, s[i]);
	EXPECT_STATS(a, 17, 17, 0, 32 * KiB, 32 * KiB, 64 * KiB);
	gostack_thread_flush();                           /* Go's stackcache_clear */
	if (is_mutex())                                   /* spans went back at allocCount 0 */
		EXPECT_STATS(a, 17, 17, 0, 0, 0, 0);
	else
		EXPECT_STATS(a, 17, 17, 0, 0, 64 * KiB, 64 * KiB);
	gostack_allocator_reclaim(a);
	EXPECT_STATS(a, 17, 17, 0, 0, 0, 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* Every order: refill takes 16 KiB, release at 32 KiB leaves 16 KiB + the freed stack. */
TEST(refill_release_amounts)
{
	if (test_cfg.no_cache)
		return;
	for (int o = 0; o < 4; o++) {
		gostack_allocator_t *a = test_allocator();
		size_t n = (size_t)2048 << o;
		int per_cache = (int)(GOSTACK_CACHE_SIZE / n);
		gostack_t s[32];

		for (int i = 0; i < per_cache + 1; i++)
			s[i] = gostack_allocator_alloc(a, n);
		gostack_thread_flush();                   /* empty cache */
		gostack_stats_t st;

		for (int i = 0; i < per_cache; i++)
			gostack_allocator_free(a, s[i]);
		gostack_allocator_stats(a, &st);
		CHECK_EQ(st.cached_bytes, GOSTACK_CACHE_SIZE);
		gostack_allocator_free(a, s[per_cache]);
		gostack_allocator_stats(a, &st);
		CHECK_EQ(st.cached_bytes, GOSTACK_CACHE_SIZE / 2 + n);
		CHECK_EQ(st.inuse_bytes, 0);
		test_check_balance(a, "refill_release_amounts");
		gostack_thread_flush();
		gostack_allocator_reclaim(a);
		gostack_allocator_stats(a, &st);
		CHECK_EQ(st.mapped_bytes, 0);
		CHECK_EQ(gostack_allocator_delete(a), 0);
	}
}

/* The list's order is Go's: LIFO, and a release gives back the most recently
 * freed stacks (Go walks its list from the head), keeping the older ones. */
TEST(cache_order_is_go)
{
	if (test_cfg.no_cache)
		return;
	gostack_allocator_t *a = test_allocator();
	size_t n = 8192;
	gostack_t s[5], r[3];

	for (int i = 0; i < 5; i++)
		s[i] = gostack_allocator_alloc(a, n);
	gostack_thread_flush();                   /* empty cache */
	for (int i = 0; i < 4; i++)               /* full: s0 s1 s2 s3 (s3 on top) */
		gostack_allocator_free(a, s[i]);
	gostack_allocator_free(a, s[4]);          /* release s3 s2, then push: s0 s1 s4 */
	for (int i = 0; i < 3; i++)
		r[i] = gostack_allocator_alloc(a, n);
	CHECK_EQ(r[0].lo, s[4].lo);
	CHECK_EQ(r[1].lo, s[1].lo);
	CHECK_EQ(r[2].lo, s[0].lo);
	for (int i = 0; i < 3; i++)
		gostack_allocator_free(a, r[i]);
	test_check_balance(a, "cache_order_is_go");
	gostack_thread_flush();
	gostack_allocator_reclaim(a);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* stackNoCache: every alloc and free goes to the pool; caches stay empty. */
TEST(stats_script_nocache)
{
	if (!test_cfg.no_cache)
		return;
	gostack_allocator_t *a = test_allocator();
	gostack_t s[17];

	s[0] = gostack_allocator_alloc(a, 4096);
	EXPECT_STATS(a, 1, 0, 4 * KiB, 0, 28 * KiB, 32 * KiB);
	for (int i = 1; i < 9; i++)
		s[i] = gostack_allocator_alloc(a, 4096);
	EXPECT_STATS(a, 9, 0, 36 * KiB, 0, 28 * KiB, 64 * KiB);
	for (int i = 0; i < 9; i++)
		gostack_allocator_free(a, s[i]);
	if (is_mutex())
		EXPECT_STATS(a, 9, 9, 0, 0, 0, 0);
	else
		EXPECT_STATS(a, 9, 9, 0, 0, 64 * KiB, 64 * KiB);
	gostack_allocator_reclaim(a);
	EXPECT_STATS(a, 9, 9, 0, 0, 0, 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* Span carving: 16/8/4/2 stacks per 32 KiB span; Go hands out the highest first. */
TEST(span_carving)
{
	for (int o = 0; o < 4; o++) {
		gostack_config_t cfg = test_cfg;

		cfg.no_cache = true;
		gostack_allocator_t *a = gostack_allocator_new(&cfg);
		size_t n = (size_t)2048 << o;
		int per = (int)(GOSTACK_CACHE_SIZE / n);
		gostack_t s[17];
		uintptr_t span = 0;

		REQUIRE(a != NULL);
		for (int i = 0; i <= per; i++) {
			s[i] = gostack_allocator_alloc(a, n);
			REQUIRE(s[i].lo != 0);
			uintptr_t sp = s[i].lo & ~(uintptr_t)(GOSTACK_CACHE_SIZE - 1);

			if (i == 0) {
				span = sp;
				if (is_mutex())
					CHECK_EQ(s[0].lo - span, GOSTACK_CACHE_SIZE - n);
			} else if (i < per) {
				CHECK_EQ(sp, span);
			} else {
				CHECK(sp != span);
			}
			if (is_mutex() && i > 0 && i < per)
				CHECK_EQ(s[i].lo, s[i - 1].lo - n);
		}
		for (int i = 0; i <= per; i++)
			gostack_allocator_free(a, s[i]);
		gostack_allocator_reclaim(a);
		CHECK_EQ(gostack_allocator_delete(a), 0);
	}
}

/* stackLarge: indexed by log2(npages), reused before the OS, bounded,
 * reclaimed. Go's stackLarge alone: the lock-free pools' per-CPU bins, which
 * keep a few large spans per CPU ahead of it, are off here
 * (test_lockfree.c's large_percpu tests them). */
TEST(large_path)
{
	gostack_config_t cfg = test_cfg;

	cfg.no_percpu = true;
	gostack_allocator_t *a = gostack_allocator_new(&cfg);

	REQUIRE(a != NULL);
	gostack_t x = gostack_allocator_alloc(a, 64 * KiB);

	REQUIRE(x.lo != 0);
	EXPECT_STATS(a, 1, 0, 64 * KiB, 0, 0, 64 * KiB);
	gostack_allocator_free(a, x);
	EXPECT_STATS(a, 1, 1, 0, 0, 64 * KiB, 64 * KiB);
	gostack_t y = gostack_allocator_alloc(a, 128 * KiB);   /* other list: not reused */
	CHECK(y.lo != x.lo);
	EXPECT_STATS(a, 2, 1, 128 * KiB, 0, 64 * KiB, 192 * KiB);
	gostack_t z = gostack_allocator_alloc(a, 40000);        /* 64 KiB: reused */
	CHECK_EQ(z.lo, x.lo);
	EXPECT_STATS(a, 3, 1, 192 * KiB, 0, 0, 192 * KiB);
	gostack_allocator_free(a, y);
	gostack_allocator_free(a, z);
	CHECK_EQ(gostack_allocator_reclaim(a), 192 * KiB);
	EXPECT_STATS(a, 3, 3, 0, 0, 0, 0);

	/* The bound: 100 stacks of 1 MiB freed keep at most 64 MiB. */
	gostack_t m[100];
	gostack_stats_t st;

	for (int i = 0; i < 100; i++)
		m[i] = gostack_allocator_alloc(a, MiB);
	for (int i = 0; i < 100; i++)
		gostack_allocator_free(a, m[i]);
	gostack_stats_detail_t d;

	gostack_allocator_stats(a, &st);
	CHECK_EQ(st.pooled_bytes, 64 * MiB);
	CHECK_EQ(st.mapped_bytes, 64 * MiB);
	/* What goes back to the OS: stackLarge's 64 MiB, and what the 36
	 * frees past the bound left dirty in the heap (its retain bound gave
	 * the rest back already). */
	gostack_allocator_stats_detail(a, &d);
	CHECK_EQ(gostack_allocator_reclaim(a), 64 * MiB + d.heap_dirty_bytes);
	CHECK_EQ(gostack_allocator_reclaim(a), 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

TEST(delete_busy)
{
	gostack_allocator_t *a = test_allocator();
	gostack_t s = gostack_allocator_alloc(a, 8192), l = gostack_allocator_alloc(a, 1 * MiB);
	gostack_stats_t before, after;

	stamp_set(s, 42);
	gostack_allocator_stats(a, &before);
	CHECK_EQ(gostack_allocator_delete(a), EBUSY);
	gostack_allocator_stats(a, &after);
	CHECK(memcmp(&before, &after, sizeof before) == 0);
	CHECK(stamp_ok(s, 42));
	gostack_allocator_free(a, s);
	CHECK_EQ(gostack_allocator_delete(a), EBUSY);
	gostack_allocator_free(a, l);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

static void *
cache_user(void *arg)
{
	gostack_allocator_t *a = arg;
	gostack_t s[64];

	for (int i = 0; i < 64; i++)
		s[i] = gostack_allocator_alloc(a, (size_t)2048 << (i % 4));
	for (int i = 0; i < 64; i++)
		gostack_allocator_free(a, s[i]);
	return NULL;   /* exits with full caches, no flush */
}

/* A thread's caches go back to the pools when it exits. */
TEST(thread_exit_returns_caches)
{
	gostack_allocator_t *a = test_allocator();
	pthread_t th[8];
	gostack_stats_t st;

	for (int i = 0; i < 8; i++)
		pthread_create(&th[i], NULL, cache_user, a);
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	gostack_allocator_stats(a, &st);
	CHECK_EQ(st.cached_bytes, 0);
	CHECK_EQ(st.inuse_bytes, 0);
	CHECK_EQ(st.allocs, 8 * 64);
	CHECK_EQ(st.frees, 8 * 64);
	test_check_balance(a, "thread_exit");
	gostack_allocator_reclaim(a);
	gostack_allocator_stats(a, &st);
	CHECK_EQ(st.mapped_bytes, 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* Delete while other (idle, live) threads still hold caches of the allocator. */
static pthread_barrier_t bar;
static void *
hold_cache_then_wait(void *arg)
{
	cache_user(arg);
	pthread_barrier_wait(&bar);   /* caches filled */
	pthread_barrier_wait(&bar);   /* allocator deleted; the slot may be reused */
	gostack_allocator_t *b = test_allocator();
	gostack_t s = gostack_allocator_alloc(b, 4096);

	stamp_set(s, 7);
	if (!stamp_ok(s, 7))
		abort();
	gostack_allocator_free(b, s);
	gostack_thread_flush();
	gostack_allocator_reclaim(b);
	if (gostack_allocator_delete(b) != 0)
		abort();
	return NULL;
}

TEST(delete_with_foreign_caches)
{
	gostack_allocator_t *a = test_allocator();
	pthread_t th[4];

	pthread_barrier_init(&bar, NULL, 5);
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, hold_cache_then_wait, a);
	pthread_barrier_wait(&bar);
	CHECK_EQ(gostack_allocator_delete(a), 0);
	pthread_barrier_wait(&bar);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&bar);
}

/* More allocators than cache slots: the extra ones run uncached, correctly. */
TEST(many_allocators)
{
	gostack_allocator_t *a[48];
	gostack_t s[48];

	for (int i = 0; i < 48; i++) {
		a[i] = test_allocator();
		s[i] = gostack_allocator_alloc(a[i], 2048 << (i % 4));
		REQUIRE(s[i].lo != 0);
		stamp_set(s[i], (uint64_t)i);
	}
	for (int i = 0; i < 48; i++) {
		CHECK(stamp_ok(s[i], (uint64_t)i));
		gostack_allocator_free(a[i], s[i]);
		test_check_balance(a[i], "many_allocators");
	}
	gostack_thread_flush();
	for (int i = 0; i < 48; i++) {
		gostack_allocator_reclaim(a[i]);
		CHECK_EQ(gostack_allocator_delete(a[i]), 0);
	}
}

/* /proc/self/maps does not grow with the number of stacks. */
TEST(few_mappings)
{
	gostack_allocator_t *a = test_allocator();
	enum { N = 20000 };
	static gostack_t s[N];
	long before = test_maps_lines();

	for (int i = 0; i < N; i++) {
		size_t n = (size_t)2048 << (i % 8);   /* 2 KiB .. 256 KiB */

		s[i] = gostack_allocator_alloc(a, n);
		REQUIRE(s[i].lo != 0);
		*(volatile char *)s[i].lo = 1;
	}
	long after = test_maps_lines();

	printf("     maps lines: %ld before, %ld with %d stacks\n", before, after, N);
	/* Sanitizer runtimes map shadow memory for what the stacks touch:
	 * their lines, not gostack's; still nowhere near one per stack. */
	CHECK(after - before <= (test_sanitized() ? 64 : 16));
	for (int i = 0; i < N; i++)
		gostack_allocator_free(a, s[i]);
	gostack_thread_flush();
	gostack_allocator_reclaim(a);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* After free, flush and reclaim, mapped_bytes is 0 and RSS really falls. */
TEST(rss_falls_after_reclaim)
{
	gostack_allocator_t *a = test_allocator();
	enum { N = 4096 };
	static gostack_t s[N];
	gostack_stats_t st;
	long rss0 = test_rss_bytes();

	for (int i = 0; i < N; i++) {
		s[i] = gostack_allocator_alloc(a, (size_t)8192 << (i % 4));   /* 8..64 KiB, all touched */
		REQUIRE(s[i].lo != 0);
		memset((void *)s[i].lo, 0xab, s[i].hi - s[i].lo);
	}
	long rss1 = test_rss_bytes();

	for (int i = 0; i < N; i++)
		gostack_allocator_free(a, s[i]);
	gostack_thread_flush();
	gostack_allocator_reclaim(a);
	gostack_allocator_stats(a, &st);
	long rss2 = test_rss_bytes();

	printf("     rss: %ld KiB before, %ld KiB with stacks, %ld KiB after reclaim\n",
	    rss0 >> 10, rss1 >> 10, rss2 >> 10);
	CHECK_EQ(st.mapped_bytes, 0);
	CHECK(rss1 - rss0 > 100 * (long)MiB);
	/* Under AddressSanitizer the shadow of the touched stacks (1/8 of
	 * them) stays resident: that is ASan's memory, not gostack's. */
	CHECK(rss2 - rss0 < 8 * (long)MiB + (test_sanitized() ? (rss1 - rss0) / 6 : 0));
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* The default allocator, and GOSTACK_NOCACHE=1 when the environment sets it. */
TEST(default_allocator)
{
	gostack_allocator_t *d = gostack_default_allocator();
	gostack_stats_t st0, st;

	REQUIRE(d != NULL);
	gostack_allocator_stats(d, &st0);
	gostack_t s = gostack_alloc(3000);

	CHECK_EQ(s.hi - s.lo, 4096);
	stamp_set(s, 99);
	CHECK(stamp_ok(s, 99));
	gostack_free(s);
	gostack_allocator_stats(d, &st);
	CHECK_EQ(st.allocs, st0.allocs + 1);
	CHECK_EQ(st.frees, st0.frees + 1);
	const char *nc = getenv("GOSTACK_NOCACHE");

	if (nc != NULL && strcmp(nc, "1") == 0)
		CHECK_EQ(st.cached_bytes, 0);
	else
		CHECK(st.cached_bytes > 0);
	test_check_balance(d, "default_allocator");
}

/* gostack_good_size is what alloc hands out; gostack_version the library's. */
TEST(good_size_and_version)
{
	gostack_allocator_t *a = test_allocator();

	CHECK_EQ(gostack_version(), GOSTACK_VERSION_NUMBER);
	CHECK_EQ(gostack_good_size(0), 0);
	CHECK_EQ(gostack_good_size(GOSTACK_MAX_SIZE + 1), 0);
	CHECK_EQ(gostack_good_size(GOSTACK_MAX_SIZE), GOSTACK_MAX_SIZE);
	CHECK_EQ(gostack_good_size(1), GOSTACK_MIN_SIZE);
	for (size_t n = 1; n <= ((size_t)1 << 21); n = n * 3 / 2 + 1) {
		gostack_t s = gostack_allocator_alloc(a, n);

		REQUIRE(s.lo != 0);
		CHECK_EQ(s.hi - s.lo, gostack_good_size(n));
		gostack_allocator_free(a, (gostack_t){ s.lo, s.lo + gostack_good_size(n) });   /* free by size asked */
	}
	gostack_thread_flush();
	gostack_allocator_reclaim(a);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* GOSTACK_BACKEND_DEFAULT is the process default: GOSTACK_BACKEND applies. */
TEST(default_backend_env)
{
	const char *b = getenv("GOSTACK_BACKEND");
	gostack_config_t cfg;
	gostack_stats_detail_t d;

	memset(&cfg, 0, sizeof cfg);
	cfg.backend = GOSTACK_BACKEND_DEFAULT;
	gostack_allocator_t *a = gostack_allocator_new(&cfg);

	REQUIRE(a != NULL);
	gostack_allocator_stats_detail(a, &d);
	if (b != NULL && strcmp(b, "mutex") == 0)
		CHECK_EQ(d.backend, GOSTACK_BACKEND_MUTEX);
	else
		CHECK_EQ(d.backend, GOSTACK_BACKEND_LOCKFREE);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

TEST_MAIN(T(go_arithmetic), T(api_sizes_and_alignment), T(api_errors), T(stats_script_cached),
    T(refill_release_amounts), T(cache_order_is_go), T(stats_script_nocache), T(span_carving), T(large_path),
    T(delete_busy), T(thread_exit_returns_caches), T(delete_with_foreign_caches),
    T(many_allocators), T(few_mappings), T(rss_falls_after_reclaim), T(default_allocator),
    T(good_size_and_version), T(default_backend_env))
