/*
 * Misuse of free is caught at the call, on every path (cached, no-cache,
 * large, default allocator): each case runs in a child process that must die
 * of SIGABRT after printing exactly one line that starts with "gostack:",
 * names the address and says what was wrong (the expected reason; several
 * where the path decides which check fires first).
 */
#include <pthread.h>

#include "test.h"

static gostack_allocator_t *A, *B;


static char heap_block_dummy;
static void free_heap(void)
{
	void *p = NULL;

	if (posix_memalign(&p, 32768, 32768) != 0)
		abort();
	gostack_allocator_free(A, (gostack_t){ (uintptr_t)p, (uintptr_t)p + 2048 });
}
static void free_c_stack(void)
{
	_Alignas(4096) char buf[8192];

	buf[0] = heap_block_dummy;
	gostack_allocator_free(A, (gostack_t){ (uintptr_t)buf, (uintptr_t)buf + 4096 });
}
static void free_static(void)
{
	static _Alignas(32768) char buf[32768];

	gostack_free((gostack_t){ (uintptr_t)buf, (uintptr_t)buf + 2048 });
}
static void free_other_allocator(void)
{
	gostack_t s = gostack_allocator_alloc(B, 8192);

	gostack_allocator_free(A, s);
}
static void free_other_allocator_large(void)
{
	gostack_t s = gostack_allocator_alloc(B, 65536);

	gostack_allocator_free(A, s);
}
static void free_default_to_other(void)
{
	gostack_t s = gostack_allocator_alloc(A, 2048);

	gostack_free(s);
}
static void free_size_bigger(void)
{
	gostack_t s = gostack_allocator_alloc(A, 2048);

	gostack_allocator_free(A, (gostack_t){ s.lo, s.lo + 4096 });
}
static void free_size_smaller(void)
{
	gostack_t s = gostack_allocator_alloc(A, 16384);

	gostack_allocator_free(A, (gostack_t){ s.lo, s.lo + 8192 });
}
static void free_size_not_pow2(void)
{
	gostack_t s = gostack_allocator_alloc(A, 8192);

	gostack_allocator_free(A, (gostack_t){ s.lo, s.lo + 6000 });
}
static void free_reversed(void)
{
	gostack_t s = gostack_allocator_alloc(A, 8192);

	gostack_allocator_free(A, (gostack_t){ s.hi, s.lo });
}
static void free_misaligned(void)
{
	gostack_t s = gostack_allocator_alloc(A, 4096);

	gostack_allocator_free(A, (gostack_t){ s.lo + 16, s.hi + 16 });
}
static void free_large_size_mismatch(void)
{
	gostack_t s = gostack_allocator_alloc(A, 262144);

	gostack_allocator_free(A, (gostack_t){ s.lo, s.lo + 131072 });
}
static void free_large_interior(void)
{
	gostack_t s = gostack_allocator_alloc(A, 262144);

	gostack_allocator_free(A, (gostack_t){ s.lo + 65536, s.lo + 131072 });
}
static void free_large_as_small(void)
{
	gostack_t s = gostack_allocator_alloc(A, 65536);

	gostack_allocator_free(A, (gostack_t){ s.lo, s.lo + 2048 });
}
static void free_after_span_returned(void)
{
	gostack_config_t c = test_cfg;

	c.no_cache = true;
	gostack_allocator_t *m = gostack_allocator_new(&c);
	gostack_t s = gostack_allocator_alloc(m, 65536);

	gostack_allocator_free(m, s);
	gostack_allocator_reclaim(m);   /* the span is back with the heap */
	gostack_allocator_free(m, s);
}
/* Double frees, outside debug mode: caught at the second free on every path
 * (the free mark in a small stack's top 16 bytes; the large span's flag).
 * `keep` holds each span, so that a mutex-pool span does not go back to the
 * heap in between (that case is "not a stack handed out"). */
static void df_small(size_t n)
{
	gostack_t keep = gostack_allocator_alloc(A, n), s = gostack_allocator_alloc(A, n);

	(void)keep;
	gostack_allocator_free(A, s);
	gostack_allocator_free(A, s);
}
static void df_2k(void) { df_small(2048); }
static void df_16k(void) { df_small(16384); }
static void df_large(void)
{
	gostack_t s = gostack_allocator_alloc(A, 65536);

	gostack_allocator_free(A, s);
	gostack_allocator_free(A, s);
}
static void df_after_flush(void)
{
	gostack_t keep = gostack_allocator_alloc(A, 4096), s = gostack_allocator_alloc(A, 4096);

	(void)keep;
	gostack_allocator_free(A, s);
	gostack_thread_flush();   /* now in the global pool */
	gostack_allocator_free(A, s);
}
static gostack_t df_stack;
static void *df_thread(void *arg)
{
	(void)arg;
	gostack_allocator_free(A, df_stack);   /* into this thread's cache */
	return NULL;
}
static void df_other_thread(void)
{
	gostack_t keep = gostack_allocator_alloc(A, 8192);
	pthread_t t;

	(void)keep;
	df_stack = gostack_allocator_alloc(A, 8192);
	pthread_create(&t, NULL, df_thread, NULL);
	pthread_join(t, NULL);   /* (the thread's exit gave its cache to the pool) */
	gostack_allocator_free(A, df_stack);
}
static void df_other_thread_cached(void)
{
	gostack_t keep = gostack_allocator_alloc(A, 8192);
	pthread_t t;

	(void)keep;
	df_stack = gostack_allocator_alloc(A, 8192);
	gostack_allocator_free(A, df_stack);   /* in this thread's cache */
	pthread_create(&t, NULL, df_thread, NULL);
	pthread_join(t, NULL);
}
static void free_too_big(void)
{
	gostack_allocator_free(A, (gostack_t){ 1ul << 32, (1ul << 32) + ((size_t)1 << 31) });
}

TEST(misuse_aborts)
{
	A = test_allocator();
	B = test_allocator();
	test_expect_abort("heap memory", "not memory gostack allocated", free_heap);
	test_expect_abort("C stack memory", "not memory gostack allocated", free_c_stack);
	test_expect_abort("static memory (default)", "not memory gostack allocated", free_static);
	test_expect_abort("another allocator's stack", "belongs to another allocator", free_other_allocator);
	test_expect_abort("another allocator's large", "belongs to another allocator", free_other_allocator_large);
	test_expect_abort("default free of A's stack", "belongs to another allocator", free_default_to_other);
	test_expect_abort("size too big", "size does not match the stack handed out|misaligned lo", free_size_bigger);
	test_expect_abort("size too small", "size does not match the stack handed out", free_size_smaller);
	test_expect_abort("size not a power of two", "size is not a power of two", free_size_not_pow2);
	test_expect_abort("hi below lo", "size is not a power of two", free_reversed);
	test_expect_abort("misaligned lo", "misaligned lo", free_misaligned);
	test_expect_abort("large: size mismatch", "size does not match the stack handed out", free_large_size_mismatch);
	test_expect_abort("large: interior pointer", "not a stack handed out by gostack|not the start of a stack|misaligned lo", free_large_interior);
	test_expect_abort("large freed as small", "size does not match the stack handed out", free_large_as_small);
	test_expect_abort("free after span returned", "not memory gostack allocated|not a stack handed out by gostack", free_after_span_returned);
	test_expect_abort("size above the maximum", "size is not a power of two", free_too_big);
	test_expect_abort("double free, 2 KiB", "double free of stack", df_2k);
	test_expect_abort("double free, 16 KiB", "double free of stack", df_16k);
	test_expect_abort("double free, large", "double free of stack", df_large);
	test_expect_abort("double free after flush", "double free of stack", df_after_flush);
	test_expect_abort("double free, first on another thread", "double free of stack", df_other_thread);
	test_expect_abort("double free, second on another thread", "double free of stack", df_other_thread_cached);
}

/* Freed and handed out again many times: the mark never fires wrongly. */
TEST(reuse_no_false_double_free)
{
	gostack_allocator_t *a = test_allocator();

	for (int i = 0; i < 100000; i++) {
		size_t n = (size_t)2048 << (i % 6);   /* 2 KiB .. 64 KiB */
		gostack_t s = gostack_allocator_alloc(a, n);

		REQUIRE(s.lo != 0);
		memset((void *)(s.hi - 64), i & 0xff, 64);   /* the coroutine writes its top */
		gostack_allocator_free(a, s);
	}
	gostack_thread_flush();
	gostack_allocator_reclaim(a);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

TEST_MAIN(T(misuse_aborts), T(reuse_no_false_double_free))
