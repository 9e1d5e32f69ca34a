/*
 * harness/micro/mincore.c: what one mincore() costs here, the system call
 * a depth-profile sample of a stack above one page makes at its free
 * (core/profile.c). mincore over the pages below a stack's resident top
 * page, for stacks of 8, 16 and 64 KiB, timed over many calls; prints ns
 * per call. The budget it is held against: issue 13's "at most 5% slower at
 * 1 in 1000" on a cached pair of P ns leaves 0.05 * 1000 * P ns per sample,
 * everything included.
 *
 *   gostack_micro_mincore [CALLS]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int
main(int argc, char **argv)
{
	long calls = argc > 1 ? strtol(argv[1], NULL, 0) : 200000;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	static const size_t sizes[] = { 8192, 16384, 65536 };
	unsigned char vec[64];

	if (calls <= 0) {
		fprintf(stderr, "usage: %s [CALLS > 0]\n", argv[0]);
		return 2;
	}
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		size_t n = sizes[k];
		char *lo = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (lo == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		lo[n - 16] = 1;   /* the top page resident, as a free stack's link makes it */
		size_t below = n - page;
		double t0 = now_ns();

		for (long i = 0; i < calls; i++)
			if (mincore(lo, below, vec) != 0) {
				perror("mincore");
				return 1;
			}
		double dt = (now_ns() - t0) / (double)calls;

		printf("mincore over the %zu page%s below a %zu KiB stack's top page: %.0f ns per call\n",
		    below / page, below / page == 1 ? "" : "s", n / 1024, dt);
		munmap(lo, n);
	}
	return 0;
}
