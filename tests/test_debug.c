/*
 * Debug mode (config.debug, GOSTACK_DEBUG=1): every double free is caught at
 * the call on the cached, no-cache and large paths and through the default
 * allocator; a write to a freed stack is reported when the stack is handed
 * out again; a corrupted free list is reported at alloc, flush or reclaim.
 * Each case runs in a child that must abort with one "gostack:" line saying
 * what happened.
 */
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#define TD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TD_ASAN 1
#endif
#endif
#ifdef TD_ASAN
#include <sanitizer/asan_interface.h>
#endif

static gostack_allocator_t *D, *DN;   /* debug cached, debug no-cache */

/* A write into a freed stack. ASan builds poison free stacks and would report
 * it first (tests/test_tools.c checks that): unpoison the byte, as for a
 * write ASan cannot see (uninstrumented code, a syscall), so debug mode's own
 * check is what catches it here too. */
static void
write_after_free(uintptr_t p)
{
#ifdef TD_ASAN
	__asan_unpoison_memory_region((void *)p, 1);
#endif
	*(volatile char *)p = 1;
}


static void df_cached(void) { gostack_t s = gostack_allocator_alloc(D, 4096); gostack_allocator_free(D, s); gostack_allocator_free(D, s); }
static void df_cached_later(void)
{
	gostack_t s = gostack_allocator_alloc(D, 2048), o[20];

	gostack_allocator_free(D, s);
	for (int i = 0; i < 20; i++)
		o[i] = gostack_allocator_alloc(D, 4096);   /* other traffic in between */
	for (int i = 0; i < 20; i++)
		gostack_allocator_free(D, o[i]);
	gostack_allocator_free(D, s);
}
static void df_nocache(void) { gostack_t s = gostack_allocator_alloc(DN, 8192); gostack_allocator_free(DN, s); gostack_allocator_free(DN, s); }
static void df_large(void) { gostack_t s = gostack_allocator_alloc(D, 262144); gostack_allocator_free(D, s); gostack_allocator_free(D, s); }
static void df_large_nocache(void) { gostack_t s = gostack_allocator_alloc(DN, 65536); gostack_allocator_free(DN, s); gostack_allocator_free(DN, s); }
static void df_flushed(void)
{
	gostack_t s = gostack_allocator_alloc(D, 16384);

	gostack_allocator_free(D, s);
	gostack_thread_flush();          /* now in the global pool */
	gostack_allocator_free(D, s);
}
static void df_default(void)
{
	gostack_t s = gostack_alloc(4096);   /* the default allocator, GOSTACK_DEBUG=1 in this test's env */

	gostack_free(s);
	gostack_free(s);
}
static void waf_small(void)
{
	gostack_t s = gostack_allocator_alloc(D, 8192);

	gostack_allocator_free(D, s);
	write_after_free(s.lo + 1000);
	(void)gostack_allocator_alloc(D, 8192);
}
static void waf_top(void)
{
	gostack_t keep = gostack_allocator_alloc(DN, 4096);   /* keeps the span from going back */
	gostack_t s = gostack_allocator_alloc(DN, 4096);

	(void)keep;
	gostack_allocator_free(DN, s);
	write_after_free(s.hi - 24);   /* just below the link (the top 16 bytes) */
	(void)gostack_allocator_alloc(DN, 4096);
}
static void waf_large(void)
{
	gostack_t s = gostack_allocator_alloc(D, (size_t)1 << 20);

	gostack_allocator_free(D, s);
	write_after_free(s.hi - 100);
	(void)gostack_allocator_alloc(D, (size_t)1 << 20);
}
static void link_corrupt_cache(void)
{
	gostack_t a = gostack_allocator_alloc(D, 2048), b = gostack_allocator_alloc(D, 2048);

	gostack_allocator_free(D, a);
	gostack_allocator_free(D, b);
	memset((void *)(b.hi - 16), 0x41, 8);   /* b is in the thread's cache: its link */
	gostack_thread_flush();
}
static void link_corrupt_alloc(void)
{
	gostack_t a = gostack_allocator_alloc(D, 2048), b = gostack_allocator_alloc(D, 2048);

	gostack_allocator_free(D, a);
	gostack_allocator_free(D, b);
	memset((void *)(b.hi - 16), 0x41, 8);
	(void)gostack_allocator_alloc(D, 2048);   /* b, its link overwritten */
	(void)gostack_allocator_alloc(D, 2048);
}
static void link_corrupt_pool(void)
{
	gostack_t s[4];

	for (int i = 0; i < 4; i++)
		s[i] = gostack_allocator_alloc(DN, 4096);
	for (int i = 0; i < 3; i++)                 /* s[3] keeps the span from going back */
		gostack_allocator_free(DN, s[i]);
	memset((void *)(s[2].hi - 16), 0x41, 8);   /* a pool link */
	gostack_allocator_reclaim(DN);
}

TEST(debug_aborts)
{
	gostack_config_t c = test_cfg;

	c.debug = true;
	c.no_cache = false;
	/* No scavenger: these cases corrupt free stacks on purpose, and a pass
	 * sweeping the pool meanwhile would race with the corruption itself
	 * (TSan saw the test's write and the sweep's drain) or reorder the
	 * pool before the check. */
	c.decay_ms = -1;
	D = gostack_allocator_new(&c);
	c.no_cache = true;
	DN = gostack_allocator_new(&c);
	REQUIRE(D != NULL && DN != NULL);
	test_expect_abort("double free, cached", "double free", df_cached);
	test_expect_abort("double free, cached, later", "double free", df_cached_later);
	/* The mutex pools give a span back when its last stack is freed (Go's
	 * allocCount), so a second free of that stack finds freed memory. */
	test_expect_abort("double free, no-cache", "double free|already freed", df_nocache);
	test_expect_abort("double free, large", "double free", df_large);
	test_expect_abort("double free, large no-cache", "double free", df_large_nocache);
	test_expect_abort("double free after flush", "double free|already freed", df_flushed);
	if (getenv("GOSTACK_DEBUG") != NULL)
		test_expect_abort("double free, default allocator", "double free", df_default);
	test_expect_abort("write after free", "written after it was freed", waf_small);
	test_expect_abort("write after free, top", "written after it was freed", waf_top);
	test_expect_abort("write after free, large", "written after it was freed", waf_large);
	test_expect_abort("corrupt link, flush check", "corrupt thread cache", link_corrupt_cache);
	test_expect_abort("corrupt link, alloc", "corrupt free list", link_corrupt_alloc);
	test_expect_abort("corrupt link, reclaim check", "stackpool|corrupt free list", link_corrupt_pool);
}

/* Without misuse, debug mode changes nothing visible: stats stay exact. */
TEST(debug_clean_run)
{
	gostack_config_t c = test_cfg;
	gostack_t s[200];
	gostack_stats_t st;

	c.debug = true;
	gostack_allocator_t *a = gostack_allocator_new(&c);

	REQUIRE(a != NULL);
	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < 200; i++) {
			s[i] = gostack_allocator_alloc(a, (size_t)2048 << (i % 7));
			REQUIRE(s[i].lo != 0);
			stamp_set(s[i], (uint64_t)i * 77 + (uint64_t)round);
		}
		for (int i = 0; i < 200; i++) {
			CHECK(stamp_ok(s[i], (uint64_t)i * 77 + (uint64_t)round));
			gostack_allocator_free(a, s[i]);
		}
		gostack_thread_flush();
		gostack_allocator_reclaim(a);
	}
	gostack_allocator_stats(a, &st);
	CHECK_EQ(st.allocs, 4000);
	CHECK_EQ(st.inuse_bytes, 0);
	CHECK_EQ(st.mapped_bytes, 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

TEST_MAIN(T(debug_aborts), T(debug_clean_run))
