/*
 * harness/micro/malloc_after.c: what gostack costs a single-threaded
 * program that never calls it in its timed loop. glibc's malloc takes a
 * faster path while a process has one thread, so a thread gostack starts
 * behind the program's back slows the program's own malloc+free. Measured
 * side by side in one process, 5 rounds each: malloc(64)+free before any
 * stack; after 100 cached 8 KiB stack pairs (no idle memory); after a 1 MiB
 * stack went idle (the scavenger starts: decay is on by default).
 * Prints ns per malloc+free pair and the thread count at each stage.
 */
#include <stdio.h>
#include <stdlib.h>

#include "gostack.h"
#include "../../tests/proc.h"

static double
malloc_pairs(long n)
{
	double t0 = proc_now();

	for (long i = 0; i < n; i++) {
		void *p = malloc(64);

		__asm__ volatile("" : : "r"(p) : "memory");
		free(p);
	}
	return (proc_now() - t0) / (double)n * 1e9;
}

static void
stage(const char *what, long n)
{
	printf("%-44s threads %d:", what, proc_threads(NULL));
	for (int r = 0; r < 5; r++)
		printf(" %6.2f", malloc_pairs(n));
	printf(" ns per malloc+free\n");
}

int
main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10000000;

	stage("before any stack", n);
	for (int i = 0; i < 100; i++)
		gostack_free(gostack_alloc(8192));
	stage("after 100 cached 8 KiB stack pairs", n);
	gostack_free(gostack_alloc((size_t)1 << 20));
	stage("after a 1 MiB stack went idle", n);
	return 0;
}
