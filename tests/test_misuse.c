/*
 * Misuse of free is caught at the call, on every path (cached, no-cache,
 * large, default allocator): each case runs in a child process that must die
 * of SIGABRT after printing exactly one line that starts with "gostack:" and
 * names the address.
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

static gostack_allocator_t *A, *B;

static void
expect_abort(const char *name, void (*fn)(void))
{
	int fd[2];

	if (pipe(fd) != 0)
		abort();
	fflush(stdout);
	pid_t pid = fork();

	if (pid == 0) {
		dup2(fd[1], 2);
		close(fd[0]);
		fn();
		_exit(0);   /* not caught: failure */
	}
	close(fd[1]);
	char buf[1024];
	size_t len = 0;
	ssize_t r;

	while ((r = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0)
		len += (size_t)r;
	buf[len] = '\0';
	close(fd[0]);
	int status = 0;

	waitpid(pid, &status, 0);
	bool aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
	bool one_line = strncmp(buf, "gostack: ", 9) == 0 && strchr(buf, '\n') == buf + len - 1;
	bool names_addr = strstr(buf, "0x") != NULL;

	printf("     %-28s %s", name, buf[0] ? buf : "(no message)\n");
	if (!aborted || !one_line || !names_addr) {
		test_failed_checks++;
		fprintf(stderr, "%s: aborted=%d one_line=%d names_addr=%d\n", name, aborted, one_line, names_addr);
	}
}

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
	expect_abort("heap memory", free_heap);
	expect_abort("C stack memory", free_c_stack);
	expect_abort("static memory (default)", free_static);
	expect_abort("another allocator's stack", free_other_allocator);
	expect_abort("another allocator's large", free_other_allocator_large);
	expect_abort("default free of A's stack", free_default_to_other);
	expect_abort("size too big", free_size_bigger);
	expect_abort("size too small", free_size_smaller);
	expect_abort("size not a power of two", free_size_not_pow2);
	expect_abort("hi below lo", free_reversed);
	expect_abort("misaligned lo", free_misaligned);
	expect_abort("large: size mismatch", free_large_size_mismatch);
	expect_abort("large: interior pointer", free_large_interior);
	expect_abort("large freed as small", free_large_as_small);
	expect_abort("free after span returned", free_after_span_returned);
	expect_abort("size above the maximum", free_too_big);
}

TEST_MAIN(T(misuse_aborts))
