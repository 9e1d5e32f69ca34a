/*
 * tests/test_guard.c: guard pages (config.guard_size, GOSTACK_GUARD).
 * Linked against the test-hooks library: it can force the mprotect fallback
 * (gostack__os_guard_mode) and fail OS requests.
 */
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

extern _Atomic int gostack__os_guard_mode;      /* core/os.c */
extern _Atomic long gostack__test_fault_nth;

static const size_t sizes[] = { 2048, 4096, 8192, 16384, 32768, 65536, 1 << 20 };
#define NSIZES (sizeof sizes / sizeof sizes[0])

static gostack_allocator_t *
guarded(size_t guard)
{
	gostack_config_t c = test_cfg;

	c.guard_size = guard;
	gostack_allocator_t *a = gostack_allocator_new(&c);

	if (a == NULL)
		fprintf(stderr, "gostack_allocator_new(guard %zu): errno %d\n", guard, errno);
	return a;
}

/* Everything freed: after a flush and reclaim nothing stays mapped. */
static void
reclaim_and_delete(gostack_allocator_t *a)
{
	gostack_stats_t st;

	gostack_thread_flush();
	gostack_allocator_reclaim(a);
	gostack_allocator_stats(a, &st);
	CHECK_EQ(st.mapped_bytes, 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* The layout promised: hi - lo the rounded size, lo page-aligned, every
 * byte of the stack writable, stacks and their guards never overlapping. */
static void
check_layout(size_t guard)
{
	gostack_allocator_t *a = guarded(guard);
	enum { N = 40 };
	gostack_t s[NSIZES][N];
	size_t page = (size_t)sysconf(_SC_PAGESIZE), g = (guard + page - 1) / page * page;

	REQUIRE(a != NULL);
	for (size_t i = 0; i < NSIZES; i++) {
		for (int j = 0; j < N; j++) {
			s[i][j] = gostack_allocator_alloc(a, sizes[i] - 100);
			REQUIRE(s[i][j].lo != 0);
			CHECK_EQ(s[i][j].hi - s[i][j].lo, sizes[i]);
			CHECK_EQ(s[i][j].lo % page, 0);
			memset((void *)s[i][j].lo, 0x5a, sizes[i]);
			stamp_set(s[i][j], i * 1000 + (size_t)j);
		}
	}
	/* No stack lies in another's [lo - guard, hi). */
	for (size_t i = 0; i < NSIZES; i++)
		for (int j = 0; j < N; j++)
			for (size_t k = 0; k < NSIZES; k++)
				for (int l = 0; l < N; l++) {
					if (i == k && j == l)
						continue;
					CHECK(s[k][l].hi <= s[i][j].lo - g || s[k][l].lo >= s[i][j].hi);
				}
	test_check_balance(a, "guarded, all in use");
	for (size_t i = 0; i < NSIZES; i++)
		for (int j = 0; j < N; j++) {
			CHECK(stamp_ok(s[i][j], i * 1000 + (size_t)j));
			gostack_allocator_free(a, s[i][j]);
		}
	test_check_balance(a, "guarded, all freed");
	reclaim_and_delete(a);
}

TEST(layout_4k) { check_layout(4096); }
TEST(layout_1byte_rounds_to_a_page) { check_layout(1); }
TEST(layout_64k) { check_layout(65536); }

struct call { void (*fn)(size_t); size_t arg; };

static void
call_sized(void *p)
{
	struct call *c = p;

	c->fn(c->arg);
}

/* fn must die of SIGSEGV (under ASan: exit after its SEGV report). */
static void
expect_segv(const char *what, void (*fn)(size_t), size_t arg)
{
	char buf[4096];
	struct call c = { fn, arg };
	int status = test_run_child(call_sized, &c, buf, sizeof buf);
	bool segv = WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;

	if (!segv && test_sanitized())
		segv = WIFEXITED(status) && WEXITSTATUS(status) != 0 && strstr(buf, "SEGV") != NULL;
	printf("     %-48s %s\n", what, segv ? "SIGSEGV" : "NOT CAUGHT");
	if (!segv) {
		test_failed_checks++;
		fprintf(stderr, "%s: status %#x, stderr: %s\n", what, status, buf);
	}
}

static gostack_allocator_t *child_a;

/* Write the byte `below` bytes under lo of a fresh stack of each size. */
static void
write_below(size_t arg)
{
	size_t size = arg & 0xffffffff, below = arg >> 32;
	gostack_t s = gostack_allocator_alloc(child_a, size);

	if (s.lo == 0)
		_exit(3);
	((volatile char *)s.lo)[0] = 1;          /* the stack itself is fine */
	((volatile char *)s.hi)[-1] = 1;
	((volatile char *)s.lo)[-(ptrdiff_t)below] = 1;   /* the guard: dies here */
}

static void
check_overflow(void)
{
	child_a = guarded(8192);
	REQUIRE(child_a != NULL);
	for (size_t i = 0; i < NSIZES; i++) {
		char what[96];

		snprintf(what, sizeof what, "write 1 byte below a %zu-byte stack", sizes[i]);
		expect_segv(what, write_below, sizes[i] | (size_t)1 << 32);
		snprintf(what, sizeof what, "write 8 KiB below a %zu-byte stack", sizes[i]);
		expect_segv(what, write_below, sizes[i] | (size_t)8192 << 32);
	}
	CHECK_EQ(gostack_allocator_delete(child_a), 0);
}

TEST(overflow_faults) { check_overflow(); }

/* A stack that was cached and handed out again keeps its guard (installed
 * once per slot, not per allocation). */
static void
reuse_then_write_below(size_t size)
{
	for (int i = 0; i < 100; i++)
		gostack_allocator_free(child_a, gostack_allocator_alloc(child_a, size));
	write_below(size | (size_t)1 << 32);
}

TEST(guard_survives_reuse)
{
	child_a = guarded(4096);
	REQUIRE(child_a != NULL);
	expect_segv("8 KiB stack reused 100 times", reuse_then_write_below, 8192);
	expect_segv("256 KiB stack reused 100 times", reuse_then_write_below, 256 << 10);
	CHECK_EQ(gostack_allocator_delete(child_a), 0);
}

static gostack_allocator_t *misuse_a;
static gostack_t misuse_s;

static void free_guard_lo(void) { gostack_allocator_free(misuse_a, (gostack_t){ misuse_s.lo - 8192, misuse_s.lo }); }
static void free_shifted(void) { gostack_allocator_free(misuse_a, (gostack_t){ misuse_s.lo - 2048, misuse_s.hi - 2048 }); }
/* The rest of a 2 KiB stack's page, above hi: 2 KiB-aligned, so only the
 * span's geometry (stride, lo_off) tells it from a stack. */
static void free_above_small(void)
{
	gostack_t s = gostack_allocator_alloc(misuse_a, 2048);

	gostack_allocator_free(misuse_a, (gostack_t){ s.hi, s.hi + 2048 });
}
static void free_large_guard(void)
{
	gostack_t s = gostack_allocator_alloc(misuse_a, 65536);

	gostack_allocator_free(misuse_a, (gostack_t){ s.lo - 65536, s.lo });
}

TEST(misuse_in_guard_memory)
{
	misuse_a = guarded(4096);
	REQUIRE(misuse_a != NULL);
	misuse_s = gostack_allocator_alloc(misuse_a, 8192);
	REQUIRE(misuse_s.lo != 0);
	test_expect_abort("free of the slot below a stack", "not the start of a stack|not a stack|misaligned", free_guard_lo);
	test_expect_abort("free of a stack shifted by 2 KiB", "not the start of a stack|misaligned", free_shifted);
	test_expect_abort("free of a large stack's lower half", "not the start of a stack|not a stack", free_large_guard);
	test_expect_abort("free of the page above a 2 KiB stack", "not the start of a stack", free_above_small);
	gostack_allocator_free(misuse_a, misuse_s);
	CHECK_EQ(gostack_allocator_delete(misuse_a), 0);
}

/* 20,000 guarded stacks without 20,000 mappings (MADV_GUARD_INSTALL). */
TEST(mappings_20000)
{
	enum { N = 20000 };
	gostack_allocator_t *a = guarded(4096);
	static gostack_t s[N];
	long before = test_maps_lines();

	REQUIRE(a != NULL);
	for (int i = 0; i < N; i++) {
		s[i] = gostack_allocator_alloc(a, i % 2 ? 8192 : 65536);
		REQUIRE(s[i].lo != 0);
		((volatile char *)s[i].hi)[-1] = 1;
	}
	long during = test_maps_lines();
	int mode = gostack__os_guard_mode;

	printf("     20,000 guarded stacks (8 and 64 KiB, 4 KiB guards): maps lines %ld -> %ld (guards by %s)\n",
	    before, during, mode == 1 ? "MADV_GUARD_INSTALL" : "mprotect");
	if (mode == 1)
		CHECK(during - before < 64);
	else
		CHECK(during - before >= N);   /* one split per guard at least */
	for (int i = 0; i < N; i++)
		gostack_allocator_free(a, s[i]);
	gostack_thread_flush();
	gostack_allocator_reclaim(a);
	printf("     after free and reclaim: %ld lines\n", test_maps_lines());
	CHECK(test_maps_lines() - before < 64);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* The fallback for kernels before 6.13, forced in a child: mprotect guards
 * (a mapping each), still faulting; past vm.max_map_count allocation fails
 * with ENOMEM and one warning naming vm.max_map_count, and nothing is lost. */
static void
fallback_child(size_t arg)
{
	(void)arg;
	gostack__os_guard_mode = 2;
	child_a = guarded(4096);
	if (child_a == NULL)
		_exit(3);
	long before = test_maps_lines();
	gostack_t s = gostack_allocator_alloc(child_a, 8192);

	if (s.lo == 0 || test_maps_lines() - before < 2)
		_exit(4);   /* the guard did not split the mapping: not mprotect */
	((volatile char *)s.lo)[-1] = 1;
}

TEST(mprotect_fallback_faults)
{
	expect_segv("mprotect guard: write below lo", fallback_child, 0);
}

static void
max_map_count_child(size_t arg)
{
	enum { MAX = 200000 };
	static gostack_t s[MAX];
	int n = 0;

	(void)arg;
	gostack__os_guard_mode = 2;
	child_a = guarded(4096);
	if (child_a == NULL)
		_exit(3);
	for (; n < MAX; n++) {
		s[n] = gostack_allocator_alloc(child_a, 8192);
		if (s[n].lo == 0)
			break;
		stamp_set(s[n], (uint64_t)n);
	}
	if (n == MAX || errno != ENOMEM)
		_exit(5);
	for (int i = 0; i < n; i++)
		if (!stamp_ok(s[i], (uint64_t)i))
			_exit(6);
	for (int i = 0; i < n; i++)
		gostack_allocator_free(child_a, s[i]);
	gostack_thread_flush();
	gostack_allocator_reclaim(child_a);
	gostack_t t = gostack_allocator_alloc(child_a, 8192);   /* works again */

	if (t.lo == 0)
		_exit(7);
	gostack_allocator_free(child_a, t);
	fprintf(stderr, "%d stacks before ENOMEM\n", n);
	_exit(0);
}

TEST(mprotect_fallback_max_map_count)
{
	long max = 0;
	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");

	if (f != NULL) {
		if (fscanf(f, "%ld", &max) != 1)
			max = 0;
		fclose(f);
	}
	if (max <= 0 || max > 150000 || test_sanitized()) {
		test_skip("vm.max_map_count %ld (or sanitized build)", max);
		return;
	}
	char buf[4096];
	struct call c = { max_map_count_child, 0 };
	int status = test_run_child(call_sized, &c, buf, sizeof buf);
	bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
	    strncmp(buf, "gostack: warning: ", 18) == 0 && strstr(buf, "vm.max_map_count") != NULL;

	printf("     vm.max_map_count %ld, mprotect guards: %s", max, buf);
	if (!ok) {
		test_failed_checks++;
		fprintf(stderr, "max_map_count child: status %#x\n", status);
	}
}

/* An OS failure while guards are installed: ENOMEM, nothing lost, and the
 * allocator works afterwards. */
TEST(guard_install_failure)
{
	gostack_allocator_t *a = guarded(4096);
	gostack_t keep = gostack_allocator_alloc(a, 8192);

	REQUIRE(keep.lo != 0);
	stamp_set(keep, 99);
	for (int k = 1; k <= 4; k++) {
		gostack_t s[64];
		int n = 0, failed = 0;

		gostack__test_fault_nth = k;
		for (int i = 0; i < 64; i++) {
			s[n] = gostack_allocator_alloc(a, i % 2 ? 16384 : 131072);
			if (s[n].lo == 0) {
				CHECK_EQ(errno, ENOMEM);
				failed++;
			} else {
				stamp_set(s[n], (uint64_t)n);
				n++;
			}
		}
		gostack__test_fault_nth = 0;
		CHECK(failed <= 1);
		for (int i = 0; i < n; i++) {
			CHECK(stamp_ok(s[i], (uint64_t)i));
			gostack_allocator_free(a, s[i]);
		}
		test_check_balance(a, "after an injected failure");
	}
	CHECK(stamp_ok(keep, 99));
	gostack_allocator_free(a, keep);
	reclaim_and_delete(a);
}

TEST(bad_guard_size)
{
	gostack_config_t c = test_cfg;

	c.guard_size = GOSTACK_MAX_SIZE + 1;
	errno = 0;
	CHECK(gostack_allocator_new(&c) == NULL);
	CHECK_EQ(errno, EINVAL);
}

/* GOSTACK_GUARD for the default allocator (ctest sets it to 4096). */
TEST(default_allocator_env)
{
	const char *v = getenv("GOSTACK_GUARD");

	if (v == NULL) {
		test_skip("GOSTACK_GUARD not set");
		return;
	}
	child_a = gostack_default_allocator();
	expect_segv("default allocator, GOSTACK_GUARD: write below lo", write_below, 8192 | (size_t)1 << 32);
}

TEST_MAIN(T(layout_4k), T(layout_1byte_rounds_to_a_page), T(layout_64k), T(overflow_faults),
    T(guard_survives_reuse), T(misuse_in_guard_memory), T(mappings_20000), T(mprotect_fallback_faults),
    T(mprotect_fallback_max_map_count), T(guard_install_failure), T(bad_guard_size), T(default_allocator_env))
