/*
 * What AddressSanitizer sees of gostack's stacks (core/tools.h):
 *  - a write into a freed stack is reported ("use-after-poison"), from the
 *    cached, no-cache, large and huge (> 1 MiB, capped poison) paths; each
 *    case in a child that must die with ASan's report;
 *  - a stack handed out again is writable end to end, also when its memory
 *    went back to the heap (reclaim) and was carved again for other sizes;
 *  - memory that went back to the heap is not left poisoned.
 * The writability cases run in every build; the report cases need ASan and
 * are skipped elsewhere (test_skip).
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#define TT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TT_ASAN 1
#endif
#endif
#ifdef TT_ASAN
#include <sanitizer/asan_interface.h>
#endif

static gostack_allocator_t *C, *N;   /* cached, no-cache (backend from the command line) */

static void
setup(void)
{
	gostack_config_t c = test_cfg;

	if (C != NULL)
		return;
	c.no_cache = false;
	C = gostack_allocator_new(&c);
	c.no_cache = true;
	N = gostack_allocator_new(&c);
	if (C == NULL || N == NULL) {
		fprintf(stderr, "gostack_allocator_new: %s\n", strerror(errno));
		exit(2);
	}
}

/* ---- use after free: ASan must report it ----------------------------- */
#ifdef TT_ASAN

static gostack_allocator_t *uaf_a;
static size_t uaf_size;
static ptrdiff_t uaf_off;   /* from lo if >= 0, else from hi */

static void
uaf_child(void)
{
	gostack_t keep = gostack_allocator_alloc(uaf_a, uaf_size);   /* keeps a pool span from going back */
	gostack_t s = gostack_allocator_alloc(uaf_a, uaf_size);

	if (s.lo == 0 || keep.lo == 0)
		_exit(3);
	memset((void *)s.lo, 1, s.hi - s.lo);   /* writable while handed out */
	gostack_allocator_free(uaf_a, s);
	volatile char *p = (volatile char *)(uaf_off >= 0 ? s.lo + (uintptr_t)uaf_off : s.hi - (uintptr_t)-uaf_off);
	*p = 42;                                /* use after free */
	_exit(0);                               /* not reported: a failure */
}

/* Runs fn in a child; true if it died with want on stderr. */
static bool
child_reports(const char *name, void (*fn)(void), const char *want)
{
	int fd[2];
	char buf[8192];
	size_t len = 0;
	ssize_t r;
	int status = 0;

	if (pipe(fd) != 0)
		abort();
	fflush(stdout);
	pid_t pid = fork();

	if (pid == 0) {
		alarm(120);
		dup2(fd[1], 2);
		close(fd[0]);
		fn();
		_exit(0);
	}
	close(fd[1]);
	while (len < sizeof buf - 1 && ((r = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0 ||
	    (r < 0 && errno == EINTR)))
		len += r > 0 ? (size_t)r : 0;
	buf[len] = '\0';
	while (read(fd[0], &(char){ 0 }, 1) > 0)   /* drain the rest of a long report */
		;
	close(fd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	bool died = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	bool found = strstr(buf, want) != NULL;
	char *nl = strstr(buf, "ERROR: AddressSanitizer");
	char line[160] = "(no report)";

	if (nl != NULL)
		snprintf(line, sizeof line, "%.*s", (int)strcspn(nl, "\n"), nl);
	printf("     %-40s %s\n", name, line);
	if (!died || !found)
		fprintf(stderr, "%s: died=%d found \"%s\"=%d; child's stderr:\n%s\n", name, died, want, found, buf);
	return died && found;
}
#endif

TEST(use_after_free_reported)
{
	setup();
#ifndef TT_ASAN
	test_skip("not an AddressSanitizer build");
#else
	static const struct {
		const char *name;
		int nocache;
		size_t size;
		ptrdiff_t off;
	} c[] = {
		{ "cached 8 KiB, middle", 0, 8 * KiB, 4000 },
		{ "cached 2 KiB, byte 0", 0, 2 * KiB, 0 },
		{ "cached 16 KiB, below the link", 0, 16 * KiB, -17 },
		{ "no-cache 4 KiB, middle", 1, 4 * KiB, 2000 },
		{ "no-cache 16 KiB, below the link", 1, 16 * KiB, -24 },
		{ "large 64 KiB, top", 0, 64 * KiB, -100 },
		{ "large 1 MiB, middle", 1, MiB, (ptrdiff_t)(MiB / 2) },
		{ "huge 4 MiB, top", 0, 4 * MiB, -100 },
		{ "huge 4 MiB, 1 MiB below the top", 1, 4 * MiB, -(ptrdiff_t)MiB },
		{ "huge 4 MiB, low 4 KiB", 0, 4 * MiB, 4000 },
	};

	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		uaf_a = c[i].nocache ? N : C;
		uaf_size = c[i].size;
		uaf_off = c[i].off;
		CHECK(child_reports(c[i].name, uaf_child, "use-after-poison"));
	}
#endif
}

/* ---- no false positive: handed-out stacks are writable --------------- */

static void
fill(gostack_t s, int v)
{
	memset((void *)s.lo, v, s.hi - s.lo);
}

static bool
not_poisoned(gostack_t s)
{
#ifdef TT_ASAN
	void *p = __asan_region_is_poisoned((void *)s.lo, s.hi - s.lo);

	if (p != NULL)
		fprintf(stderr, "[%#lx, %#lx) poisoned at %p\n", (unsigned long)s.lo, (unsigned long)s.hi, p);
	return p == NULL;
#else
	(void)s;
	return true;
#endif
}

/* Freed then handed out again: every byte writable, on every path. */
TEST(reuse_writable)
{
	setup();
	size_t sizes[] = { 2 * KiB, 4 * KiB, 8 * KiB, 16 * KiB, 32 * KiB, 256 * KiB, MiB, 4 * MiB };

	for (int k = 0; k < 2; k++) {
		gostack_allocator_t *a = k ? N : C;

		for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			gostack_t s[8], t[8];

			for (int j = 0; j < 8; j++) {
				s[j] = gostack_allocator_alloc(a, sizes[i]);
				REQUIRE(s[j].lo != 0);
				fill(s[j], 0x11);
			}
			for (int j = 0; j < 8; j++)
				gostack_allocator_free(a, s[j]);
			int again = 0;

			for (int j = 0; j < 8; j++) {
				t[j] = gostack_allocator_alloc(a, sizes[i]);
				REQUIRE(t[j].lo != 0);
				for (int m = 0; m < 8; m++)
					again += t[j].lo == s[m].lo;
				CHECK(not_poisoned(t[j]));
				fill(t[j], 0x22);
			}
			CHECK(again > 0);   /* the same memory was handed out again */
			for (int j = 0; j < 8; j++)
				gostack_allocator_free(a, t[j]);
		}
		gostack_thread_flush();
		gostack_allocator_reclaim(a);
		test_check_balance(a, k ? "reuse_writable nocache" : "reuse_writable");
	}
}

/*
 * Freed stacks whose spans go back to the heap (reclaim) are not left
 * poisoned, and the same memory carved again for other sizes is writable
 * end to end (gostack writes links into it when carving).
 */
TEST(heap_reuse_writable)
{
	setup();
	enum { NS = 64 };
	static gostack_t s[NS], t[NS];
	size_t sizes[] = { 8 * KiB, 64 * KiB, 2 * MiB };

	for (int k = 0; k < 2; k++) {
		gostack_allocator_t *a = k ? N : C;

		for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			int nsz = sizes[i] > MiB ? 4 : NS, overlap = 0;
			size_t other = sizes[i] == 8 * KiB ? 2 * KiB : sizes[i] == 64 * KiB ? 4 * KiB : 32 * KiB;

			for (int j = 0; j < nsz; j++) {
				s[j] = gostack_allocator_alloc(a, sizes[i]);
				REQUIRE(s[j].lo != 0);
				fill(s[j], 0x33);
			}
			for (int j = 0; j < nsz; j++)
				gostack_allocator_free(a, s[j]);
			gostack_thread_flush();
			gostack_allocator_reclaim(a);
			for (int j = 0; j < nsz; j++)
				CHECK(not_poisoned(s[j]));   /* memory back in the heap (or unmapped) */
			/* The heap again: other sizes, then the same size. */
			for (int j = 0; j < NS; j++) {
				t[j] = gostack_allocator_alloc(a, other);
				REQUIRE(t[j].lo != 0);
				CHECK(not_poisoned(t[j]));
				fill(t[j], 0x44);
				for (int m = 0; m < nsz; m++)
					overlap += t[j].lo >= s[m].lo && t[j].lo < s[m].hi;
			}
			for (int j = 0; j < NS; j++)
				gostack_allocator_free(a, t[j]);
			for (int j = 0; j < nsz; j++) {
				t[j] = gostack_allocator_alloc(a, sizes[i]);
				REQUIRE(t[j].lo != 0);
				CHECK(not_poisoned(t[j]));
				fill(t[j], 0x55);
			}
			for (int j = 0; j < nsz; j++)
				gostack_allocator_free(a, t[j]);
			gostack_thread_flush();
			gostack_allocator_reclaim(a);
			printf("     %s %zu KiB: %d of %d %zu KiB stacks in its old memory\n", k ? "no-cache" : "cached",
			    sizes[i] >> 10, overlap, NS, other >> 10);
		}
		gostack_stats_t st;

		gostack_allocator_stats(a, &st);
		CHECK_EQ(st.mapped_bytes, 0);
	}
}

/* ASan only: a free stack is poisoned but for a small stack's link (its top 16 bytes), and only there. */
TEST(poison_ranges)
{
	setup();
#ifndef TT_ASAN
	test_skip("not an AddressSanitizer build");
#else
	size_t sizes[] = { 2 * KiB, 16 * KiB, 64 * KiB, MiB, 4 * MiB };

	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		gostack_t keep = gostack_allocator_alloc(N, sizes[i]);
		gostack_t s = gostack_allocator_alloc(N, sizes[i]);
		size_t n = sizes[i];

		REQUIRE(s.lo != 0 && keep.lo != 0);
		CHECK(not_poisoned(s));
		gostack_allocator_free(N, s);
		/* A small stack's link (its top 16 bytes) stays accessible;
		 * everything else gostack poisons is (a large stack has no link). */
		size_t link = n < 32 * KiB ? 16 : 0;

		if (link != 0)
			CHECK(__asan_region_is_poisoned((void *)(s.hi - link), link) == NULL);
		CHECK(__asan_address_is_poisoned((void *)s.lo));
		CHECK(__asan_address_is_poisoned((void *)(s.hi - link - 1)));
		if (n <= MiB) {
			CHECK(__asan_region_is_poisoned((void *)s.lo, n - link) == (void *)s.lo);
			/* every granule below the link is poisoned */
			for (uintptr_t p = s.lo; p < s.hi - link; p += 8)
				if (!__asan_address_is_poisoned((void *)p)) {
					CHECK(!"a hole in the poison");
					break;
				}
		} else {
			CHECK(__asan_address_is_poisoned((void *)(s.lo + 4 * KiB - 1)));
			CHECK(__asan_address_is_poisoned((void *)(s.hi - MiB)));
			CHECK(!__asan_address_is_poisoned((void *)(s.hi - MiB - 1)));   /* the cap */
			CHECK(!__asan_address_is_poisoned((void *)(s.lo + 4 * KiB)));
		}
		gostack_allocator_free(N, keep);
	}
	gostack_allocator_reclaim(N);
#endif
}

TEST_MAIN(T(use_after_free_reported), T(reuse_writable), T(heap_reuse_writable), T(poison_ranges))
