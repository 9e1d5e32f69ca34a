/*
 * What 0.2 added to the API, used the way the ports use it:
 *   error_model       every failure sets errno and says so in its return
 *                     value; successes leave errno alone
 *   reclaim_bytes     reclaim returns the stack memory it gave back to the
 *                     OS: the heap's dirty bytes before it, and RSS drops
 *   name_and_heap     config.name, and the heap's reserved/released bytes
 *                     against /proc/self/maps and the decay
 *   free_lo           free by lo alone: small, large, guarded, another
 *                     thread; misuse aborts
 *   deferred_own      a coroutine frees the stack it runs on (state-threads'
 *                     exit path), on a ucontext coroutine
 *   deferred_exit     the waiting stack is freed at thread exit
 *   deferred_misuse   double deferral, deferring a free stack: abort
 *   callbacks         minicoro-shaped alloc_cb/dealloc_cb
 *   pthread_stack     threads on guarded gostack stacks; a detached attr is
 *                     refused
 *   pthread_overflow  a thread overflowing its gostack stack hits the guard
 */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

#include "gostack_pthread.h"
#include "proc.h"
#include "test.h"

static gostack_allocator_t *
allocator_with(size_t guard)
{
	gostack_config_t cfg = test_cfg;

	cfg.guard_size = guard;
	return gostack_allocator_new(&cfg);
}

TEST(error_model)
{
	gostack_allocator_t *a = test_allocator();
	gostack_t s;

	REQUIRE(a != NULL);
	errno = 0;
	s = gostack_allocator_alloc(a, 8192);
	CHECK(s.lo != 0);
	CHECK_EQ(errno, 0);   /* a success leaves errno alone */
	gostack_allocator_free(a, s);
	CHECK_EQ(errno, 0);

	errno = 0;
	s = gostack_allocator_alloc(a, 0);
	CHECK(s.lo == 0 && s.hi == 0 && errno == EINVAL);
	errno = 0;
	s = gostack_allocator_alloc(a, GOSTACK_MAX_SIZE + 1);
	CHECK(s.lo == 0 && errno == EINVAL);
	errno = 0;
	s = gostack_allocator_alloc(NULL, 8192);
	CHECK(s.lo == 0 && errno == EINVAL);

	gostack_config_t bad = test_cfg;

	bad.name = "a name that is far longer than thirty-one bytes";
	errno = 0;
	CHECK(gostack_allocator_new(&bad) == NULL && errno == EINVAL);
	bad.name = NULL;
	bad.guard_size = GOSTACK_MAX_SIZE + 1;
	errno = 0;
	CHECK(gostack_allocator_new(&bad) == NULL && errno == EINVAL);

	s = gostack_allocator_alloc(a, 8192);
	errno = 0;
	CHECK_EQ(gostack_allocator_delete(a), EBUSY);   /* nonzero, and errno says the same */
	CHECK_EQ(errno, EBUSY);
	errno = 0;
	CHECK_EQ(gostack_allocator_delete(NULL), EINVAL);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK_EQ(gostack_allocator_delete(gostack_default_allocator()), EINVAL);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK_EQ(gostack_allocator_reclaim(NULL), 0);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK_EQ(gostack_allocator_stats_print(NULL, 2), -1);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK_EQ(gostack_allocator_stats_print(a, -1), -1);
	CHECK_EQ(errno, EBADF);
	errno = 0;
	CHECK_EQ(gostack_good_size(0), 0);
	gostack_allocator_free(a, s);
	gostack_thread_flush();
	errno = 0;
	CHECK_EQ(gostack_allocator_delete(a), 0);
	CHECK_EQ(errno, 0);
}

/* Touch every page of n bytes of stacks of size sz; free them all. */
static void
touch_and_free(gostack_allocator_t *a, size_t sz, int n)
{
	gostack_t *s = calloc((size_t)n, sizeof *s);

	for (int i = 0; i < n; i++) {
		s[i] = gostack_allocator_alloc(a, sz);
		if (s[i].lo == 0)
			abort();
		for (uintptr_t p = s[i].lo; p < s[i].hi; p += 4096)
			*(volatile char *)p = 1;
	}
	for (int i = 0; i < n; i++)
		gostack_allocator_free(a, s[i]);
	free(s);
}

TEST(reclaim_bytes)
{
	gostack_config_t cfg = test_cfg;

	cfg.decay_ms = -1;   /* nothing goes back by itself meanwhile */
	gostack_allocator_t *a = gostack_allocator_new(&cfg);
	gostack_stats_detail_t d;

	REQUIRE(a != NULL);
	(void)gostack_allocator_reclaim(a);   /* a clean heap to start from */
	CHECK_EQ(gostack_allocator_reclaim(a), 0);
	/* 20 large stacks of 32 KiB (640 KiB, the case) and 256 small
	 * ones in 8 KiB (2 MiB, whole pool spans). */
	touch_and_free(a, 32 * KiB, 20);
	touch_and_free(a, 8 * KiB, 256);
	gostack_thread_flush();
	long rss0 = proc_rss_bytes();

	gostack_allocator_stats_detail(a, &d);
	size_t want = d.total.pooled_bytes + d.heap_dirty_bytes;   /* what is committed and free */
	uint64_t released0 = d.heap_released_bytes;
	size_t got = gostack_allocator_reclaim(a);
	long rss1 = proc_rss_bytes();

	printf("     reclaim: %zu bytes back (pooled + heap dirty before: %zu); RSS %ld -> %ld KiB\n", got, want,
	    rss0 >> 10, rss1 >> 10);
	CHECK(got >= 640 * KiB + 2 * MiB);
	CHECK_EQ(got, want);
	CHECK(rss0 - rss1 >= (long)(got / 2));   /* it did go back (other memory moves too) */
	gostack_allocator_stats_detail(a, &d);
	CHECK_EQ(d.heap_dirty_bytes, 0);
	CHECK_EQ(d.total.mapped_bytes, 0);
	CHECK_EQ(d.heap_released_bytes, released0 + got);
	CHECK_EQ(gostack_allocator_reclaim(a), 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

TEST(name_and_heap)
{
	gostack_config_t cfg = test_cfg;
	gostack_stats_detail_t d;
	char buf[8192];
	char name[] = "http-fibers";

	cfg.name = name;
	cfg.decay_ms = 50;
	gostack_allocator_t *a = gostack_allocator_new(&cfg);

	REQUIRE(a != NULL);
	name[0] = 'X';   /* copied: the caller's buffer is the caller's */
	gostack_allocator_stats_detail(a, &d);
	CHECK(strcmp(d.name, "http-fibers") == 0);
	CHECK_EQ(test_stats_printed(a, buf, sizeof buf), 0);
	CHECK(strstr(buf, " http-fibers (") != NULL);
	CHECK(strstr(buf, "heap_reserved_bytes=") != NULL);

	/* Reserved: what gostack mapped, inside the process's mappings. */
	gostack_t s = gostack_allocator_alloc(a, 256 * KiB);

	REQUIRE(s.lo != 0);
	gostack_allocator_stats_detail(a, &d);
	CHECK(d.heap_reserved_bytes >= 64 * MiB);
	CHECK(d.heap_reserved_bytes >= d.total.mapped_bytes);
	CHECK(d.heap_reserved_bytes % (64 * MiB) == 0);
	/* Released: the decay gives a touched stack's memory back by itself. */
	for (uintptr_t p = s.lo; p < s.hi; p += 4096)
		*(volatile char *)p = 1;
	uint64_t r0 = d.heap_released_bytes;

	gostack_allocator_free(a, s);
	for (int i = 0; i < 300; i++) {   /* 50 ms decay: up to 3 s on a loaded machine */
		gostack_allocator_stats_detail(a, &d);
		if (d.heap_released_bytes >= r0 + 256 * KiB)
			break;
		usleep(10000);
	}
	CHECK(d.heap_released_bytes >= r0 + 256 * KiB);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

TEST(free_lo)
{
	size_t sizes[] = { 2 * KiB, 4 * KiB, 3000, 16 * KiB, 32 * KiB, 100 * KiB, 2 * MiB };

	for (int g = 0; g < 2; g++) {
		gostack_allocator_t *a = allocator_with(g ? 4096 : 0);
		gostack_stats_t st;

		REQUIRE(a != NULL);
		for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			gostack_t s = gostack_allocator_alloc(a, sizes[i]);

			REQUIRE(s.lo != 0);
			gostack_allocator_free_lo(a, s.lo);
			gostack_t t = gostack_allocator_alloc(a, sizes[i]);   /* handed out again */

			CHECK_EQ(t.hi - t.lo, gostack_good_size(sizes[i]));
			test_free_on_thread(a, t, true);
		}
		gostack_allocator_free_lo(a, 0);   /* as free(NULL) */
		gostack_allocator_stats(a, &st);
		CHECK_EQ(st.inuse_bytes, 0);
		test_check_balance(a, "free_lo");
		gostack_thread_flush();
		CHECK_EQ(gostack_allocator_delete(a), 0);
	}
	gostack_t d = gostack_alloc(5000);

	REQUIRE(d.lo != 0);
	gostack_free_lo(d.lo);
}

static gostack_allocator_t *M;

static void free_lo_interior(void)
{
	gostack_t s = gostack_allocator_alloc(M, 8192);

	gostack_allocator_free_lo(M, s.lo + 4096);
}
static void free_lo_large_interior(void)
{
	gostack_t s = gostack_allocator_alloc(M, 256 * KiB);

	gostack_allocator_free_lo(M, s.lo + 64 * KiB);
}
static void free_lo_foreign(void)
{
	static _Alignas(4096) char buf[8192];

	gostack_allocator_free_lo(M, (uintptr_t)buf);
}
static void free_lo_twice(void)
{
	gostack_t k = gostack_allocator_alloc(M, 8192), s = gostack_allocator_alloc(M, 8192);

	(void)k;
	gostack_allocator_free_lo(M, s.lo);
	gostack_allocator_free_lo(M, s.lo);
}

TEST(free_lo_misuse)
{
	M = test_allocator();
	REQUIRE(M != NULL);
	test_expect_abort("free_lo interior", "lo is not the start|misaligned", free_lo_interior);
	test_expect_abort("free_lo large interior", "not the lo of a stack|misaligned|not the start", free_lo_large_interior);
	test_expect_abort("free_lo foreign", "not memory gostack allocated", free_lo_foreign);
	test_expect_abort("free_lo twice", "double free", free_lo_twice);
}

/* ---- deferred frees on a coroutine -------------------------------------- */

static ucontext_t main_uc, co_uc;
static gostack_allocator_t *D;
static gostack_t co_stk;
static volatile int co_done;

static void
co_body(void)
{
	volatile char frame[2048];

	frame[0] = 1;
	frame[sizeof frame - 1] = frame[0];
	/* state-threads' exit path: free the stack this code runs on, then
	 * switch away for good. */
	gostack_allocator_free_deferred(D, co_stk);
	co_done = 1;
	setcontext(&main_uc);
}

static void
run_coroutine(gostack_allocator_t *a, size_t size)
{
	D = a;
	co_stk = gostack_allocator_alloc(a, size);
	if (co_stk.lo == 0)
		abort();
	co_done = 0;
	getcontext(&co_uc);
	co_uc.uc_stack.ss_sp = (void *)co_stk.lo;
	co_uc.uc_stack.ss_size = co_stk.hi - co_stk.lo;
	co_uc.uc_link = NULL;
	makecontext(&co_uc, co_body, 0);
	swapcontext(&main_uc, &co_uc);
}

TEST(deferred_own)
{
	size_t sizes[] = { 8 * KiB, 16 * KiB, 64 * KiB, 256 * KiB };

	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		gostack_allocator_t *a = allocator_with(i % 2 ? 4096 : 0);
		gostack_stats_t st;

		REQUIRE(a != NULL);
		run_coroutine(a, sizes[i]);
		CHECK(co_done);
		gostack_allocator_stats(a, &st);
		CHECK_EQ(st.inuse_bytes, sizes[i]);   /* still waiting: counts as in use */
		CHECK_EQ(gostack_allocator_delete(a), EBUSY);
		/* The next coroutine (its alloc may already free the first one,
		 * from the main stack, and hand it out again) defers its own. */
		run_coroutine(a, sizes[i]);
		CHECK(co_done);
		gostack_allocator_stats(a, &st);
		CHECK_EQ(st.inuse_bytes, sizes[i]);
		CHECK_EQ(st.frees, 1);
		gostack_thread_flush();   /* off the stack now: freed */
		gostack_allocator_stats(a, &st);
		CHECK_EQ(st.inuse_bytes, 0);
		CHECK_EQ(st.frees, 2);
		/* A stack the thread is not running on goes at once. */
		gostack_t s = gostack_allocator_alloc(a, sizes[i]);

		gostack_allocator_free_deferred(a, s);
		gostack_allocator_stats(a, &st);
		CHECK_EQ(st.inuse_bytes, 0);
		test_check_balance(a, "deferred_own");
		CHECK_EQ(gostack_allocator_delete(a), 0);
	}
}

static void *
deferred_thread(void *arg)
{
	run_coroutine(arg, 16 * KiB);
	return NULL;   /* thread exit frees it */
}

TEST(deferred_exit)
{
	gostack_allocator_t *a = test_allocator();
	gostack_stats_t st;
	pthread_t th;

	REQUIRE(a != NULL);
	REQUIRE(pthread_create(&th, NULL, deferred_thread, a) == 0);
	pthread_join(th, NULL);
	CHECK(co_done);
	gostack_allocator_stats(a, &st);
	CHECK_EQ(st.inuse_bytes, 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

static void
co_twice(void)
{
	gostack_allocator_free_deferred(D, co_stk);
	gostack_allocator_free_deferred(D, co_stk);
	setcontext(&main_uc);
}
static void
defer_twice(void)
{
	D = M;
	co_stk = gostack_allocator_alloc(M, 8192);
	getcontext(&co_uc);
	co_uc.uc_stack.ss_sp = (void *)co_stk.lo;
	co_uc.uc_stack.ss_size = co_stk.hi - co_stk.lo;
	makecontext(&co_uc, co_twice, 0);
	swapcontext(&main_uc, &co_uc);
}
static void
defer_freed(void)
{
	gostack_t k = gostack_allocator_alloc(M, 8192), s = gostack_allocator_alloc(M, 8192);

	(void)k;
	gostack_allocator_free(M, s);
	gostack_allocator_free_deferred(M, s);
}
static void
defer_bogus(void)
{
	gostack_t s = gostack_allocator_alloc(M, 8192);

	gostack_allocator_free_deferred(M, (gostack_t){ s.lo, s.lo + 4096 });
}

TEST(deferred_misuse)
{
	M = test_allocator();
	REQUIRE(M != NULL);
	if (test_sanitized())   /* the child's stderr gets ASan's swapcontext warnings before gostack's line */
		printf("     deferred twice: SKIP under sanitizers (checked in the plain build)\n");
	else
		test_expect_abort("deferred twice", "double free", defer_twice);
	test_expect_abort("deferred after free", "double free", defer_freed);
	test_expect_abort("deferred, wrong size", "size does not match|misaligned", defer_bogus);
}

/* ---- adapters ------------------------------------------------------------ */

/* minicoro's mco_desc hooks, spelled as minicoro declares them. */
typedef void *(*mco_alloc_cb)(size_t size, void *allocator_data);
typedef void (*mco_dealloc_cb)(void *ptr, size_t size, void *allocator_data);

TEST(callbacks)
{
	mco_alloc_cb alloc_cb = gostack_cb_alloc;
	mco_dealloc_cb dealloc_cb = gostack_cb_dealloc;
	gostack_allocator_t *a = test_allocator();
	size_t coro_size = 56 * KiB + 1234;   /* minicoro: struct + context + stack, not a power of two */
	gostack_stats_t st;

	REQUIRE(a != NULL);
	for (int round = 0; round < 100; round++) {
		void *p = alloc_cb(coro_size, a), *q = alloc_cb(3000, NULL);

		REQUIRE(p != NULL && q != NULL);
		memset(p, 0xab, gostack_good_size(coro_size));   /* the whole block is the caller's */
		memset(q, 0xcd, 3000);
		dealloc_cb(p, coro_size, a);
		dealloc_cb(q, 3000, NULL);
	}
	errno = 0;
	CHECK(alloc_cb(0, a) == NULL && errno == EINVAL);
	gostack_allocator_stats(a, &st);
	CHECK_EQ(st.inuse_bytes, 0);
	CHECK_EQ(st.allocs, 100);
	gostack_thread_flush();
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

static void *
thread_fn(void *arg)
{
	volatile char frame[2048];   /* a frame of its own on the gostack stack (16 KiB at least) */

	frame[0] = 1;
	frame[sizeof frame - 1] = 2;
	*(int *)arg = frame[0] + frame[sizeof frame - 1];
	return NULL;
}

static __attribute__((noinline)) int
recurse(int n)
{
	volatile char pad[1024];

	pad[0] = (char)n;
	return n == 0 ? pad[0] : recurse(n - 1) + pad[0];
}

static void *
overflow_fn(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)recurse(1 << 20);   /* far past any stack */
}

static void
overflow_child(void *arg)
{
	gostack_allocator_t *g = allocator_with(4096);
	pthread_attr_t at;
	gostack_t stk;
	pthread_t th;

	(void)arg;
	pthread_attr_init(&at);
	if (g == NULL || gostack_pthread_attr_setstack(&at, g, 256 * KiB, &stk) != 0 ||
	    pthread_create(&th, &at, overflow_fn, NULL) != 0)
		_exit(3);
	pthread_join(th, NULL);
	_exit(0);   /* the guard did not fault */
}

TEST(pthread_stack)
{
	gostack_allocator_t *g = allocator_with(4096);
	enum { N = 32 };
	pthread_t th[N];
	pthread_attr_t at[N];
	gostack_t stk[N];
	int out[N];
	gostack_stats_t st;

	REQUIRE(g != NULL);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++) {
			pthread_attr_init(&at[i]);
			out[i] = 0;
			REQUIRE(gostack_pthread_attr_setstack(&at[i], g, i % 2 ? 128 * KiB : 4 * KiB, &stk[i]) == 0);
			CHECK(stk[i].hi - stk[i].lo >= (size_t)sysconf(_SC_THREAD_STACK_MIN));
			REQUIRE(pthread_create(&th[i], &at[i], thread_fn, &out[i]) == 0);
		}
		for (int i = 0; i < N; i++) {
			pthread_join(th[i], NULL);
			pthread_attr_destroy(&at[i]);
			CHECK_EQ(out[i], 3);
			gostack_allocator_free(g, stk[i]);   /* after the join */
		}
	}
	gostack_allocator_stats(g, &st);
	CHECK_EQ(st.inuse_bytes, 0);

	pthread_attr_t det;
	gostack_t s = { 0, 0 };

	pthread_attr_init(&det);
	pthread_attr_setdetachstate(&det, PTHREAD_CREATE_DETACHED);
	errno = 0;
	CHECK_EQ(gostack_pthread_attr_setstack(&det, g, 64 * KiB, &s), EINVAL);
	CHECK_EQ(errno, EINVAL);
	CHECK(s.lo == 0);
	pthread_attr_destroy(&det);
	gostack_allocator_stats(g, &st);
	CHECK_EQ(st.inuse_bytes, 0);

	gostack_thread_flush();
	CHECK_EQ(gostack_allocator_delete(g), 0);
}

TEST(pthread_overflow)
{
	char buf[4096];

	if (test_sanitized()) {
		test_skip("sanitizers take the SIGSEGV of a stack overflow for their own");
		return;
	}
	int status = test_run_child(overflow_child, NULL, buf, sizeof buf);

	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
	printf("     thread stack overflow into the guard: %s\n",
	    WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "no signal");
}

TEST_MAIN(T(error_model), T(reclaim_bytes), T(name_and_heap), T(free_lo), T(free_lo_misuse), T(deferred_own),
    T(deferred_exit), T(deferred_misuse), T(callbacks), T(pthread_stack),
    T(pthread_overflow))
