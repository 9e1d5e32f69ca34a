/*
 * Misuse of free is caught at the call, on every path (cached, no-cache,
 * large, default allocator): each case runs in a child process that must die
 * of SIGABRT after printing exactly one line that starts with "gostack:",
 * names the address and says what was wrong (the expected reason; several
 * where the path decides which check fires first).
 */
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
}

TEST_MAIN(T(misuse_aborts))
