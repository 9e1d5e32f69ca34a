/*
 * tests/test_threads.c: the threads gostack starts, and when. Run as its
 * own process (ctest), so that only the main thread exists at the start.
 *
 *   none_for_cached    a single-threaded program's stacks that only move
 *                      between the program and its thread's cache start no
 *                      thread (either backend: the lock-free pools start none
 *                      ever); the first idle memory of an allocator with
 *                      decay (a large stack freed into stackLarge) starts
 *                      exactly one, the scavenger; a second allocator adds
 *                      none; an allocator with decay -1 starts none
 */
#include "proc.h"
#include "test.h"

/* gostack's threads: the scavenger is named "gostack-scav". (A sanitizer's
 * runtime may add threads of its own, so those are not counted.) */
static int
threads(void)
{
	return proc_threads("gostack-scav");
}

TEST(none_for_cached)
{
	int base = threads();   /* 0 */
	gostack_config_t cfg = test_cfg;

	cfg.decay_ms = -1;
	gostack_allocator_t *never = gostack_allocator_new(&cfg);

	REQUIRE(never != NULL);
	gostack_allocator_free(never, gostack_allocator_alloc(never, 1 << 20));
	CHECK_EQ(threads(), base);   /* no decay: no thread, even with idle memory */

	cfg.decay_ms = 100;
	gostack_allocator_t *a = gostack_allocator_new(&cfg), *b = gostack_allocator_new(&cfg);

	REQUIRE(a != NULL && b != NULL);
	for (int i = 0; i < 100; i++)
		gostack_allocator_free(a, gostack_allocator_alloc(a, 8192));
	printf("     gostack threads: %d at start, %d after 100 cached 8 KiB pairs (all threads: %d)\n", base,
	    threads(), proc_threads(NULL));
	CHECK_EQ(threads(), base);
	gostack_allocator_free(a, gostack_allocator_alloc(a, 1 << 20));   /* idle in stackLarge */
	printf("     gostack threads: %d after a 1 MiB stack went idle (all threads: %d)\n", threads(),
	    proc_threads(NULL));
	CHECK_EQ(threads(), base + 1);
	gostack_allocator_free(b, gostack_allocator_alloc(b, 1 << 20));
	CHECK_EQ(threads(), base + 1);
	gostack_allocator_reclaim(a);
	gostack_allocator_reclaim(b);
	gostack_allocator_reclaim(never);
	CHECK_EQ(gostack_allocator_delete(a), 0);
	CHECK_EQ(gostack_allocator_delete(b), 0);
	CHECK_EQ(gostack_allocator_delete(never), 0);
}

TEST_MAIN(T(none_for_cached))
