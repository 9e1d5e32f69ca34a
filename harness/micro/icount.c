/*
 * harness/micro/icount.c: the loop that harness/micro/icount runs under
 * Valgrind's cachegrind to count the instructions of one alloc+free pair.
 * Instruction counts do not depend on the machine's load, so two builds or
 * two allocators compare exactly on a shared, noisy machine, where the
 * timed pair (pair.c) scatters by 2x between runs.
 *
 *   gostack_micro_icount MODE SIZE PAIRS
 *
 * MODE: none (the loop alone), gostack (a default allocator), guarded (4
 * KiB guard pages) or malloc (the process's malloc and free). Each mode
 * first runs 1000 pairs to warm the thread's cache (and malloc's), then
 * PAIRS pairs. The script runs every mode with two values of PAIRS and
 * divides the difference of the totals by the difference of PAIRS: what
 * the process does once (start-up, warm-up, exit) cancels, and the loop's
 * own instructions (mode none) are subtracted.
 * Only paths that stay in the thread's cache count true: Valgrind has no
 * rseq, so whatever reaches the lock-free pools takes the per-CPU tier's
 * fallback there (no-cache pairs, refills, releases, large stacks), and the
 * library is built without its Valgrind hooks (GOSTACK_VALGRIND=OFF),
 * whose RUNNING_ON_VALGRIND tests would send every pair to the slow path.
 */
#include <gostack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
pairs(gostack_allocator_t *a, size_t size, long n)
{
	for (long i = 0; i < n; i++) {
		gostack_t s = gostack_allocator_alloc(a, size);

		__asm__ volatile("" : : "r"(s.lo) : "memory");
		gostack_allocator_free(a, s);
	}
}

static void
mallocs(size_t size, long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(size);

		__asm__ volatile("" : : "r"(p) : "memory");
		free(p);
	}
}

static void
loop(long n)
{
	for (long i = 0; i < n; i++)
		__asm__ volatile("" : : : "memory");
}

int
main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s none|gostack|guarded|malloc SIZE PAIRS\n", argv[0]);
		return 2;
	}
	const char *mode = argv[1];
	size_t size = strtoul(argv[2], NULL, 0);
	long n = strtol(argv[3], NULL, 0);
	gostack_config_t cfg = { 0 };

	if (strcmp(mode, "none") == 0) {
		loop(1000);
		loop(n);
		return 0;
	}
	if (strcmp(mode, "malloc") == 0) {
		mallocs(size, 1000);
		mallocs(size, n);
		return 0;
	}
	if (strcmp(mode, "guarded") == 0)
		cfg.guard_size = 4096;
	else if (strcmp(mode, "gostack") != 0) {
		fprintf(stderr, "%s: unknown mode %s\n", argv[0], mode);
		return 2;
	}
	cfg.decay_ms = -1;   /* no scavenger thread: its work is not the pair's */
	gostack_allocator_t *a = gostack_allocator_new(&cfg);

	if (a == NULL) {
		perror("gostack_allocator_new");
		return 1;
	}
	pairs(a, size, 1000);
	pairs(a, size, n);
	gostack_allocator_delete(a);
	return 0;
}
