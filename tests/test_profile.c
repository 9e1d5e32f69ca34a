/*
 * The depth profile (core/profile.c), with stacks of known depth:
 *   known_depth      every stack sampled (profile 1); stacks of 2 KiB .. 1 MiB
 *                    written down to a known depth, the way a coroutine
 *                    does (from hi down), freed on this or another thread:
 *                    max, p50 and p99 are the depth, to 64 bytes within the
 *                    top page of a small stack, to the page below it and in
 *                    large stacks
 *   canary           a word written at lo (an overflow canary) below
 *                    untouched pages is not depth
 *   reserve          a sample found clean at its free is kept for the
 *                    thread's next sample (no madvise): counted as cached,
 *                    measured right when handed out again, given back by
 *                    gostack_thread_flush
 *   gap              a frame's buffer written only at its low end, below
 *                    the top page with untouched memory (paint, then whole
 *                    pages) above it, is depth
 *   on_coroutine     the same with the depth reached by a real coroutine
 *                    (ucontext, a call chain of known frames)
 *   untouched_rss    sampled stacks never touched cost no more RSS than
 *                    unsampled ones (nothing the coroutine did not touch is
 *                    committed)
 *   sampling_rate    profile N samples about one stack in N
 *   advice           the stats_print advice line, as the README shows it
 *   off              profile 0: no sample, no depth, nothing printed
 * Run on both backends, cached and no-cache, and with guard pages
 * (tests/CMakeLists.txt).
 */
#include <limits.h>
#include <pthread.h>
#include <ucontext.h>
#include <unistd.h>

#include "proc.h"

#include "test.h"

static gostack_allocator_t *
profiled(unsigned n)
{
	gostack_config_t cfg = test_cfg;

	cfg.profile = n;
	cfg.decay_ms = -1;
	return gostack_allocator_new(&cfg);
}

/* What a coroutine leaves: [hi - depth, hi) written, from the top down. */
static void
use(gostack_t s, size_t depth)
{
	for (size_t off = 1; off <= depth; off++)
		((volatile unsigned char *)s.hi)[-(ptrdiff_t)off] = (unsigned char)off;
}

static const gostack_depth_stats_t *
class_of(const gostack_stats_detail_t *d, size_t size)
{
	for (int c = 0; c < GOSTACK_PROFILE_CLASSES; c++)
		if (d->depth[c].size == size)
			return &d->depth[c];
	return NULL;
}

/* The depth profile.c reports for a stack of n bytes used to depth. */
static size_t
expected(size_t n, size_t depth)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	if (depth == 0)
		return 0;
	if (n >= 32 * KiB)   /* large: pages */
		return (depth + pg - 1) / pg * pg;
	size_t top = n < pg ? n : pg;

	if (depth <= top - 64) {   /* inside the painted top page: 64-byte lines, checked at their top word */
		if (depth % 64 != 0 && depth % 64 < 8)
			return depth / 64 * 64;   /* the lowest line's checked word was not reached */
		return depth <= 64 ? 64 : (depth + 63) / 64 * 64;
	}
	return (depth + pg - 1) / pg * pg > n ? n : (depth + pg - 1) / pg * pg;
}

TEST(known_depth)
{
	size_t sizes[] = { 2 * KiB, 4 * KiB, 8 * KiB, 16 * KiB, 32 * KiB, 64 * KiB, 256 * KiB, 1 * MiB };

	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t n = sizes[i];
		size_t depths[] = { 0, 100, 1000, n / 3, n / 2 + 200, n - 100 };

		for (size_t j = 0; j < sizeof depths / sizeof depths[0]; j++) {
			gostack_allocator_t *a = profiled(1);
			gostack_stats_detail_t d;

			REQUIRE(a != NULL);
			for (int k = 0; k < 4; k++) {   /* handed out again: the previous use must not show */
				gostack_t s = gostack_allocator_alloc(a, n), deep = gostack_allocator_alloc(a, n);

				REQUIRE(s.lo != 0 && deep.lo != 0);
				use(deep, n);   /* a stack used all the way down beside it */
				use(s, depths[j]);
				if (k % 2 == 0) {
					gostack_allocator_free(a, s);
				} else {   /* freed on another thread */
					test_free_on_thread(a, s, false);
				}
				/* Freed last: the next round's s is this slot (LIFO), so
				 * its deep use must not show in s's depth. */
				gostack_allocator_free(a, deep);
			}
			gostack_allocator_stats_detail(a, &d);
			const gostack_depth_stats_t *c = class_of(&d, n);

			REQUIRE(c != NULL);
			CHECK_EQ(d.profile, 1);
			CHECK_EQ(c->samples, 8);
			/* Four uses of depth n (the neighbour) and four of depths[j]. */
			size_t want = expected(n, depths[j]);
			uint64_t at_want = 0;

			for (int b = 0; b < GOSTACK_PROFILE_BUCKETS; b++)
				at_want += c->hist[b];
			CHECK_EQ(at_want, 8);
			CHECK_EQ(c->max, n);
			size_t lo_bucket = want == 0 ? 0 : (want * GOSTACK_PROFILE_BUCKETS - 1) / n;

			CHECK(c->hist[lo_bucket] >= 4);
			CHECK(c->p50 >= want && c->p50 <= want + n / GOSTACK_PROFILE_BUCKETS);
			if (c->p50 < want || c->p50 > want + n / GOSTACK_PROFILE_BUCKETS)
				printf("     %zu-byte stack, depth %zu: p50 %zu, want %zu\n", n, depths[j], c->p50, want);
			gostack_thread_flush();
			CHECK_EQ(gostack_allocator_delete(a), 0);
		}
		/* One use alone: max is the depth itself. */
		gostack_allocator_t *a = profiled(1);
		gostack_stats_detail_t d;
		gostack_t s = gostack_allocator_alloc(a, n);

		REQUIRE(s.lo != 0);
		use(s, n / 3);
		gostack_allocator_free(a, s);
		gostack_allocator_stats_detail(a, &d);
		CHECK_EQ(class_of(&d, n)->max, expected(n, n / 3));
		if (class_of(&d, n)->max != expected(n, n / 3))
			printf("     %zu-byte stack, depth %zu: max %zu, want %zu\n", n, n / 3, class_of(&d, n)->max,
			    expected(n, n / 3));
		gostack_thread_flush();
		CHECK_EQ(gostack_allocator_delete(a), 0);
	}
}

static ucontext_t main_uc, co_uc;
static int co_frames;

static __attribute__((noinline)) int
frames(int n)
{
	volatile char pad[1000];

	pad[0] = (char)n;
	pad[sizeof pad - 1] = pad[0];
	return n == 0 ? pad[0] : frames(n - 1) + pad[sizeof pad - 1];
}

static void
co_body(void)
{
	frames(co_frames);
	swapcontext(&co_uc, &main_uc);
}

#if defined(__SANITIZE_THREAD__)
#define TSAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN_BUILD 1
#endif
#endif

TEST(on_coroutine)
{
#ifdef TSAN_BUILD
	test_skip("ThreadSanitizer does not follow swapcontext onto the coroutine's stack");
	return;
#endif
	gostack_allocator_t *a = profiled(1);
	size_t prev = 0;

	REQUIRE(a != NULL);
	for (int f = 2; f <= 40; f += 19) {   /* ~2, ~21 and ~40 KiB of frames on a 64 KiB stack */
		gostack_stats_detail_t d;
		gostack_t s = gostack_allocator_alloc(a, 64 * KiB);

		REQUIRE(s.lo != 0);
		co_frames = f;
		getcontext(&co_uc);
		co_uc.uc_stack.ss_sp = (void *)s.lo;
		co_uc.uc_stack.ss_size = s.hi - s.lo;
		co_uc.uc_link = &main_uc;
		makecontext(&co_uc, co_body, 0);
		swapcontext(&main_uc, &co_uc);
		gostack_allocator_free(a, s);
		gostack_allocator_stats_detail(a, &d);
		size_t depth = class_of(&d, 64 * KiB)->max;

		printf("     %d frames of 1000+ bytes: measured depth %zu bytes\n", f, depth);
		CHECK(depth >= (size_t)f * 1000);
		CHECK(depth <= (size_t)f * 1000 + (size_t)f * 256 + 8 * KiB);   /* frame overhead, the page */
		CHECK(depth > prev);
		prev = depth;
	}
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

TEST(untouched_rss)
{
	enum { N = 3000 };
	static gostack_t s[N];
	size_t sizes[] = { 8 * KiB, 64 * KiB };
	long grow[2][2];

	for (int on = 0; on < 2; on++) {
		for (int k = 0; k < 2; k++) {
			gostack_allocator_t *a = profiled(on ? 1 : 0);

			REQUIRE(a != NULL);
			for (int i = 0; i < N; i++) {   /* carve them, and give them back once */
				s[i] = gostack_allocator_alloc(a, sizes[k]);
				REQUIRE(s[i].lo != 0);
			}
			for (int i = 0; i < N; i++)
				gostack_allocator_free(a, s[i]);
			/* The process's RSS also moves for reasons not ours (under
			 * ASan, its own allocator and shadow, seen once at +340 KiB
			 * with the machine loaded): the least growth of 3 hand-outs. */
			grow[on][k] = LONG_MAX;
			for (int rep = 0; rep < 3; rep++) {
				long r0 = proc_rss_bytes(), g;

				for (int i = 0; i < N; i++)
					s[i] = gostack_allocator_alloc(a, sizes[k]);
				g = proc_rss_bytes() - r0;
				if (g < grow[on][k])
					grow[on][k] = g;
				for (int i = 0; i < N; i++)
					gostack_allocator_free(a, s[i]);
			}
			gostack_thread_flush();
			gostack_allocator_reclaim(a);
			CHECK_EQ(gostack_allocator_delete(a), 0);
		}
	}
	for (int k = 0; k < 2; k++) {
		printf("     %d untouched %zu KiB stacks handed out again: RSS +%ld KiB unsampled, +%ld KiB all sampled\n", N,
		    sizes[k] >> 10, grow[0][k] >> 10, grow[1][k] >> 10);
		CHECK(grow[1][k] <= grow[0][k] + 256 * (long)KiB);
	}
}

TEST(sampling_rate)
{
	gostack_allocator_t *a = profiled(100);
	gostack_stats_detail_t d;
	enum { N = 200000 };

	REQUIRE(a != NULL);
	for (int i = 0; i < N; i++) {
		gostack_t s = gostack_allocator_alloc(a, (size_t)2048 << (i % 4));

		REQUIRE(s.lo != 0);
		gostack_allocator_free(a, s);
	}
	gostack_allocator_stats_detail(a, &d);
	uint64_t n = 0;

	for (int c = 0; c < GOSTACK_PROFILE_CLASSES; c++)
		n += d.depth[c].samples;
	printf("     profile 100: %llu samples of %d stacks\n", (unsigned long long)n, N);
	CHECK(n >= N / 100 * 8 / 10 && n <= N / 100 * 12 / 10);
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++)
		CHECK(d.depth[o].samples >= N / 4 / 100 / 2);   /* every class is sampled */
	gostack_thread_flush();
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

TEST(advice)
{
	gostack_allocator_t *a = profiled(1);
	char buf[8192];

	REQUIRE(a != NULL);
	for (int i = 0; i < 1024; i++) {
		gostack_t s = gostack_allocator_alloc(a, 64 * KiB);

		REQUIRE(s.lo != 0);
		use(s, i < 1010 ? 10 * KiB + 7 : 12 * KiB);   /* p99 in the 12 KiB page */
		gostack_allocator_free(a, s);
	}
	CHECK_EQ(test_stats_printed(a, buf, sizeof buf), 0);
	const char *want = "gostack: 64 KiB stacks: p99 depth 12 KiB over 1024 samples (16 KiB stacks would do)";
	const char *line = strstr(buf, "gostack: 64 KiB stacks:");

	if (line != NULL)
		printf("     %.*s\n", (int)strcspn(line, "\n"), line);
	CHECK(strstr(buf, want) != NULL);
	gostack_thread_flush();
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

TEST(off)
{
	gostack_allocator_t *a = profiled(0);
	gostack_stats_detail_t d;
	char buf[8192];

	REQUIRE(a != NULL);
	for (int i = 0; i < 1000; i++) {
		gostack_t s = gostack_allocator_alloc(a, i % 2 ? 8 * KiB : 128 * KiB);

		use(s, 4000);
		gostack_allocator_free(a, s);
	}
	gostack_allocator_stats_detail(a, &d);
	const char *env = getenv("GOSTACK_PROFILE");

	if (env != NULL && atoi(env) > 0) {
		CHECK_EQ(d.profile, (unsigned)atoi(env));   /* the environment applies when config leaves it 0 */
	} else {
		CHECK_EQ(d.profile, 0);
		for (int c = 0; c < GOSTACK_PROFILE_CLASSES; c++)
			CHECK_EQ(d.depth[c].samples, 0);
		CHECK_EQ(test_stats_printed(a, buf, sizeof buf), 0);
		CHECK(strstr(buf, "stacks: p99 depth") == NULL);
	}
	gostack_thread_flush();
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* A canary at lo (coroutine libraries write one to catch overflows) with
 * untouched pages between it and the frames is not depth. */
TEST(canary)
{
	size_t sizes[] = { 8 * KiB, 16 * KiB, 64 * KiB, 1 * MiB };

	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		gostack_allocator_t *a = profiled(1);
		gostack_stats_detail_t d;
		gostack_t s = gostack_allocator_alloc(a, sizes[i]);

		REQUIRE(s.lo != 0);
		*(volatile uint64_t *)s.lo = 0xdeadbeefcafef00dull;
		use(s, 5000);   /* past the top page of an 8 KiB stack: one page below it */
		gostack_allocator_free(a, s);
		gostack_allocator_stats_detail(a, &d);
		size_t want = sizes[i] == 8 * KiB ? 8 * KiB : expected(sizes[i], 5000);

		CHECK_EQ(class_of(&d, sizes[i])->max, want);
		gostack_thread_flush();
		CHECK_EQ(gostack_allocator_delete(a), 0);
	}
}

TEST(gap)
{
	size_t sizes[] = { 8 * KiB, 16 * KiB, 64 * KiB, 1 * MiB };
	size_t depths[] = { 4200, 9000 };   /* just below the top page; a page below it */

	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		for (size_t j = 0; j < sizeof depths / sizeof depths[0]; j++) {
			size_t n = sizes[i], depth = depths[j];

			size_t pg = (size_t)sysconf(_SC_PAGESIZE);

			if (depth > n || (depth > n - pg && n > 2 * pg))
				continue;   /* not in it; the bottom page below an untouched one: the canary's rule */
			gostack_allocator_t *a = profiled(1);
			gostack_stats_detail_t d;
			gostack_t s = gostack_allocator_alloc(a, n);

			REQUIRE(s.lo != 0);
			use(s, 64);   /* the frame's own words */
			/* read() into char buf[depth - 100]: its low 100 bytes */
			for (size_t off = depth - 100; off < depth; off++)
				((volatile unsigned char *)s.hi)[-(ptrdiff_t)off - 1] = 0x5a;
			gostack_allocator_free(a, s);
			gostack_allocator_stats_detail(a, &d);
			CHECK_EQ(class_of(&d, n)->max, expected(n, depth));
			if (class_of(&d, n)->max != expected(n, depth))
				printf("     %zu-byte stack, buffer at depth %zu: max %zu, want %zu\n", n, depth,
				    class_of(&d, n)->max, expected(n, depth));
			gostack_thread_flush();
			CHECK_EQ(gostack_allocator_delete(a), 0);
		}
	}
}

TEST(reserve)
{
	size_t sizes[] = { 8 * KiB, 16 * KiB };

	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t n = sizes[i];
		gostack_allocator_t *a = profiled(1);
		gostack_stats_detail_t d;
		gostack_stats_t st;
		size_t depths[] = { 100, n / 2 + 200, 100, 100 };   /* clean, deep, then clean again */

		REQUIRE(a != NULL);
		for (size_t j = 0; j < sizeof depths / sizeof depths[0]; j++) {
			gostack_t s = gostack_allocator_alloc(a, n);

			REQUIRE(s.lo != 0);
			use(s, depths[j]);
			gostack_allocator_free(a, s);
			test_check_balance(a, "profile reserve");
		}
		gostack_allocator_stats_detail(a, &d);
		const gostack_depth_stats_t *c = class_of(&d, n);
		size_t shallow = expected(n, 100), deep = expected(n, n / 2 + 200);

		CHECK_EQ(c->samples, 4);
		CHECK_EQ(c->max, deep);
		/* The deep use does not show in the next one's depth (handed out from
		 * the list, its pages given back), nor the reserve's in the deep one. */
		CHECK_EQ(c->hist[(shallow * GOSTACK_PROFILE_BUCKETS - 1) / n], 3);
		CHECK_EQ(c->hist[(deep * GOSTACK_PROFILE_BUCKETS - 1) / n], 1);
		gostack_thread_flush();
		gostack_allocator_stats(a, &st);
		CHECK_EQ(st.cached_bytes, 0);   /* the reserve went back too */
		test_check_balance(a, "profile reserve flushed");
		CHECK_EQ(gostack_allocator_delete(a), 0);
	}
}

TEST_MAIN(T(known_depth), T(canary), T(gap), T(reserve), T(on_coroutine), T(untouched_rss), T(sampling_rate), T(advice), T(off))
