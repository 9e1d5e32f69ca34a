/*
 * Run under Valgrind by tests/valgrind_tools.sh in the -DGOSTACK_VALGRIND=ON
 * build (core/tools.c):
 *   test_valgrind switch   coroutines on gostack stacks (ucontext), each
 *                          running a deep-ish call chain; with the stacks
 *                          registered memcheck prints no "client switching
 *                          stacks?" warning and no error (also in debug
 *                          mode, whose poison check reads reused stacks)
 *   test_valgrind uaf      writes into a freed stack; memcheck must report
 *                          an "Invalid write"
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include "gostack.h"

static ucontext_t main_ctx, co_ctx;
static volatile unsigned long co_sum;

static __attribute__((noinline)) unsigned long
deep(int depth)
{
	volatile unsigned char frame[1536];   /* a frame worth noticing */
	unsigned long sum = 0;

	for (size_t i = 0; i < sizeof frame; i++)
		frame[i] = (unsigned char)(i + (size_t)depth);
	if (depth > 0)
		sum = deep(depth - 1);
	for (size_t i = 0; i < sizeof frame; i += 64)
		sum += frame[i];
	return sum;
}

static void
body(void)
{
	co_sum = deep(16);   /* ~26 KiB of frames */
}

/* Whether gostack's scavenger thread is running (so that the leak check at
 * exit covers its join). */
static int
scavenger_running(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int found = 0;

	while (d != NULL && (e = readdir(d)) != NULL) {
		char path[300], comm[32] = "";
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
		if ((f = fopen(path, "r")) != NULL) {
			if (fgets(comm, sizeof comm, f) != NULL && strncmp(comm, "gostack-scav", 12) == 0)
				found = 1;
			fclose(f);
		}
	}
	if (d != NULL)
		closedir(d);
	return found;
}

static int
run_on(gostack_allocator_t *a, size_t size)
{
	gostack_t stk = gostack_allocator_alloc(a, size);

	if (stk.lo == 0) {
		perror("gostack_allocator_alloc");
		return 1;
	}
	getcontext(&co_ctx);
	co_ctx.uc_stack.ss_sp = (void *)stk.lo;
	co_ctx.uc_stack.ss_size = stk.hi - stk.lo;
	co_ctx.uc_link = &main_ctx;
	makecontext(&co_ctx, body, 0);
	co_sum = 0;
	swapcontext(&main_ctx, &co_ctx);
	gostack_allocator_free(a, stk);
	if (co_sum == 0) {
		fprintf(stderr, "test_valgrind: the coroutine did not run\n");
		return 1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	gostack_config_t cfg = { .backend = GOSTACK_BACKEND_DEFAULT };
	gostack_allocator_t *a = gostack_allocator_new(&cfg), *n, *d;

	cfg.no_cache = true;
	n = gostack_allocator_new(&cfg);
	cfg.no_cache = false;
	cfg.debug = true;
	d = gostack_allocator_new(&cfg);
	if (a == NULL || n == NULL || d == NULL)
		return 2;
	if (strcmp(mode, "switch") == 0) {
		int bad = 0;

		for (int round = 0; round < 3; round++) {   /* stacks handed out again, too */
			bad |= run_on(a, 32 << 10);
			bad |= run_on(n, 32 << 10);
			bad |= run_on(a, 256 << 10);
			bad |= run_on(a, 4 << 20);
			bad |= run_on(d, 32 << 10);    /* debug mode checks its poison on reuse */
			bad |= run_on(d, 1 << 20);
		}
		gostack_thread_flush();
		gostack_allocator_reclaim(a);
		gostack_allocator_reclaim(n);
		bad |= run_on(a, 64 << 10);   /* memory back from the heap */
		printf("test_valgrind switch: scavenger thread at exit: %s\n", scavenger_running() ? "yes" : "no");
		printf("test_valgrind switch: %s\n", bad ? "FAILED" : "ok");
		return bad;
	}
	if (strcmp(mode, "uaf") == 0) {
		gostack_t keep = gostack_allocator_alloc(a, 8192), s = gostack_allocator_alloc(a, 8192);

		if (s.lo == 0 || keep.lo == 0)
			return 2;
		gostack_allocator_free(a, s);
		((volatile char *)s.lo)[4000] = 1;   /* use after free */
		printf("test_valgrind uaf: wrote into a freed stack\n");
		return 0;
	}
	fprintf(stderr, "usage: test_valgrind switch|uaf\n");
	return 2;
}
