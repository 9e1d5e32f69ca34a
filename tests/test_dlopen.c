/*
 * tests/test_dlopen.c: gostack as a plugin's dependency. This program does
 * not link gostack: it dlopens libgostack.so.0 (GOSTACK_SO, from CMake),
 * allocates and frees small and large stacks through the default allocator
 * (which starts the scavenger: GOSTACK_DECAY_MS=100 in ctest), flushes and
 * dlcloses it, 40 times; then waits longer than the decay period. The
 * library is linked with -z nodelete, so dlclose leaves it (and its one
 * scavenger thread) in place instead of unmapping code a thread still
 * runs: no crash, and threads do not pile up per load.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "proc.h"

typedef struct { uintptr_t lo, hi; } stk_t;

int
main(void)
{
	int failed = 0, base = proc_threads("gostack-scav");

	for (int round = 0; round < 40; round++) {
		void *h = dlopen(GOSTACK_SO, RTLD_NOW | RTLD_LOCAL);

		if (h == NULL) {
			fprintf(stderr, "dlopen: %s\n", dlerror());
			return 1;
		}
		stk_t (*alloc)(size_t) = (stk_t (*)(size_t))dlsym(h, "gostack_alloc");
		void (*fr)(stk_t) = (void (*)(stk_t))dlsym(h, "gostack_free");
		void (*flush)(void) = (void (*)(void))dlsym(h, "gostack_thread_flush");

		if (alloc == NULL || fr == NULL || flush == NULL) {
			fprintf(stderr, "dlsym: %s\n", dlerror());
			return 1;
		}
		stk_t s = alloc(8192), l = alloc((size_t)1 << 20);

		if (s.lo == 0 || l.lo == 0) {
			fprintf(stderr, "round %d: allocation failed\n", round);
			failed++;
			break;
		}
		memset((void *)(s.hi - 1024), 1, 1024);
		memset((void *)(l.hi - 4096), 1, 4096);
		fr(s);
		fr(l);
		flush();
		if (dlclose(h) != 0) {
			fprintf(stderr, "dlclose: %s\n", dlerror());
			failed++;
		}
	}
	usleep(400 * 1000);   /* longer than GOSTACK_DECAY_MS=100: the scavenger runs */
	int n = proc_threads("gostack-scav");

	printf("     40 dlopen/dlclose rounds: gostack threads %d before, %d after (all threads: %d)\n", base, n,
	    proc_threads(NULL));
	if (n != base + 1) {
		fprintf(stderr, "threads piled up: %d before, %d after\n", base, n);
		failed++;
	}
	printf("%d passed, %d failed\n", failed == 0, failed != 0);
	return failed != 0;
}
