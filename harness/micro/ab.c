/*
 * harness/micro/ab.c: two builds of the library in one process, side by
 * side. Each is dlopen'ed (RTLD_LOCAL: its own allocators, caches and
 * scavenger), and the cached pair of one size is timed on each in
 * interleaved rounds (A B, B A, A B, ...), so that a VM whose speed moves
 * from second to second moves both alike; prints the medians and B/A.
 *
 *   gostack_micro_ab A.so B.so [SIZE [ROUNDS [PAIRS [PROFILE_A [PROFILE_B]]]]]
 *
 * SIZE "hold" times the suite's hold workload instead, on one thread: 128
 * stacks of 2, 4, 8 and 16 KiB in turn allocated, each touched near its
 * top, then all freed (Go's small caches refill and release on about every
 * other operation: the per-CPU tier's path); PAIRS counts stacks, and the
 * figures are ns per stack.
 *
 * The two paths must name different files (copy a build to compare it with
 * itself: dlopen returns the handle already loaded for a path it knows).
 * PROFILE_A and PROFILE_B are config.profile (0: off), so one build can be
 * set against itself with the depth profile on. Which library was loaded
 * first biases the result by a few percent on some machines: run it with
 * A and B swapped as well.
 */
#include <dlfcn.h>
#include <gostack.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tests/proc.h"

#define MAX_ROUNDS 1000

typedef gostack_allocator_t *(*new_fn)(const gostack_config_t *);
typedef gostack_t (*alloc_fn)(gostack_allocator_t *, size_t);
typedef void (*free_fn)(gostack_allocator_t *, gostack_t);

struct side {
	const char *path;
	void *handle;
	alloc_fn alloc;
	free_fn free;
	gostack_allocator_t *a;
	double ns[MAX_ROUNDS];
};

static int
open_side(struct side *s, unsigned profile)
{
	void *h = dlopen(s->path, RTLD_NOW | RTLD_LOCAL);

	if (h == NULL) {
		fprintf(stderr, "gostack_micro_ab: %s\n", dlerror());
		return -1;
	}
	s->handle = h;
	new_fn mk = (new_fn)dlsym(h, "gostack_allocator_new");
	gostack_config_t c = { .backend = GOSTACK_BACKEND_LOCKFREE, .profile = profile };

	s->alloc = (alloc_fn)dlsym(h, "gostack_allocator_alloc");
	s->free = (free_fn)dlsym(h, "gostack_allocator_free");
	if (mk == NULL || s->alloc == NULL || s->free == NULL || (s->a = mk(&c)) == NULL) {
		fprintf(stderr, "gostack_micro_ab: %s: not a gostack library, or its allocator failed\n", s->path);
		return -1;
	}
	return 0;
}

static double
pairs(struct side *s, size_t size, long n)
{
	double t0 = proc_now();

	for (long i = 0; i < n; i++) {
		gostack_t k = s->alloc(s->a, size);

		__asm__ volatile("" : : "r"(k.lo) : "memory");
		s->free(s->a, k);
	}
	return (proc_now() - t0) / (double)n * 1e9;
}

#define HOLD_N 128

static double
hold(struct side *s, long n)
{
	static const size_t sizes[4] = { 2048, 4096, 8192, 16384 };
	gostack_t k[HOLD_N];
	long done = 0;
	double t0 = proc_now();

	while (done < n) {
		for (int i = 0; i < HOLD_N; i++) {
			k[i] = s->alloc(s->a, sizes[i & 3]);
			((volatile char *)k[i].hi)[-64] = (char)i;   /* near its top, as the suite's hold */
		}
		for (int i = 0; i < HOLD_N; i++)
			s->free(s->a, k[i]);
		done += HOLD_N;
	}
	return (proc_now() - t0) / (double)done * 1e9;
}

static int
cmp(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return a < b ? -1 : a > b;
}

int
main(int argc, char **argv)
{
	static struct side s[2];

	if (argc < 3) {
		fprintf(stderr, "usage: gostack_micro_ab A.so B.so [SIZE [ROUNDS [PAIRS [PROFILE_A [PROFILE_B]]]]]\n");
		return 2;
	}
	bool is_hold = argc > 3 && strcmp(argv[3], "hold") == 0;
	size_t size = is_hold ? 0 : argc > 3 ? strtoul(argv[3], NULL, 0) : 8192;
	int rounds = argc > 4 ? atoi(argv[4]) : 21;
	long n = argc > 5 ? atol(argv[5]) : 4000000;
	unsigned prof[2] = { argc > 6 ? (unsigned)strtoul(argv[6], NULL, 0) : 0, 0 };

	prof[1] = argc > 7 ? (unsigned)strtoul(argv[7], NULL, 0) : prof[0];
	if (rounds < 1 || rounds > MAX_ROUNDS || n < 1) {
		fprintf(stderr, "gostack_micro_ab: ROUNDS must be 1..%d and PAIRS positive\n", MAX_ROUNDS);
		return 2;
	}
	for (int k = 0; k < 2; k++) {
		s[k].path = argv[1 + k];
		if (open_side(&s[k], prof[k]) != 0)
			return 1;
	}
	if (s[0].handle == s[1].handle) {
		fprintf(stderr, "gostack_micro_ab: %s and %s are one library: copy a build to a second path\n", s[0].path, s[1].path);
		return 2;
	}
	for (int r = 0; r < rounds; r++)
		for (int j = 0; j < 2; j++) {
			int k = (r & 1) ? 1 - j : j;

			s[k].ns[r] = is_hold ? hold(&s[k], n) : pairs(&s[k], size, n);
		}
	qsort(s[0].ns, (size_t)rounds, sizeof(double), cmp);
	qsort(s[1].ns, (size_t)rounds, sizeof(double), cmp);
	double a = s[0].ns[rounds / 2], b = s[1].ns[rounds / 2];

	if (is_hold)
		printf("hold (%d stacks of 2..16 KiB), ns per stack", HOLD_N);
	else
		printf("%zu-byte pair", size);
	printf(", %d interleaved rounds of %ld: A %.2f ns, B %.2f ns (medians; fastest %.2f / %.2f): "
	    "B/A %.3f  [A %s, profile %u; B %s, profile %u]\n",
	    rounds, n, a, b, s[0].ns[0], s[1].ns[0], b / a, s[0].path, prof[0], s[1].path, prof[1]);
	return 0;
}
