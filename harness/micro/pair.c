/*
 * harness/micro/pair.c: the cached 8 KiB alloc+free pair against a bare
 * thread-local free list (the floor any cached path can reach) and malloc,
 * side by side in one process, several rounds. Run it plain and under
 * LD_PRELOAD of another malloc (harness/micro/run does both).
 * Also: the lock-free allocator with decay on (the default, with its
 * background scavenger) against decay off, at 8 KiB (the cached path) and
 * 256 KiB (stackLarge, whose free reads no clock: the scavenger stamps an
 * idle span when it first sees it), and with 4 KiB
 * guard pages (the same cached paths, the free's check reading the span's
 * guarded geometry); and the depth profile at one
 * in 1000 and one in 100 against off (core/profile.c). Output: three lines
 * per round, ns per pair.
 */
#include <gostack.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../../tests/proc.h"

struct node { struct node *next; };
static __thread struct node *bare;

#define now proc_now

/* ns per alloc+free pair of `size` bytes from a. */
static double
pairs(gostack_allocator_t *a, size_t size, long n)
{
	double t0 = now();

	for (long i = 0; i < n; i++) {
		gostack_t s = gostack_allocator_alloc(a, size);
		__asm__ volatile("" : : "r"(s.lo) : "memory");
		gostack_allocator_free(a, s);
	}
	return (now() - t0) / (double)n * 1e9;
}

int
main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000000;
	int rounds = argc > 2 ? atoi(argv[2]) : 5;
	/* decay_ms 0 is the default (1000 ms, with the background scavenger
	 * running); -1 turns decay off: the hot path must cost the same. */
	gostack_config_t lf = { .backend = GOSTACK_BACKEND_LOCKFREE }, mu = { .backend = GOSTACK_BACKEND_MUTEX };
	gostack_config_t nd = { .backend = GOSTACK_BACKEND_LOCKFREE, .decay_ms = -1 };
	gostack_config_t gd = { .backend = GOSTACK_BACKEND_LOCKFREE, .guard_size = 4096 };
	gostack_allocator_t *a = gostack_allocator_new(&lf), *m = gostack_allocator_new(&mu);
	gostack_allocator_t *d = gostack_allocator_new(&nd), *g = gostack_allocator_new(&gd);
	gostack_config_t p1k = { .backend = GOSTACK_BACKEND_LOCKFREE, .profile = 1000 };
	gostack_config_t p100 = { .backend = GOSTACK_BACKEND_LOCKFREE, .profile = 100 };
	gostack_allocator_t *pk = gostack_allocator_new(&p1k), *ph = gostack_allocator_new(&p100);
	static struct node nodes[2];

	if (a == NULL || m == NULL || d == NULL || g == NULL || pk == NULL || ph == NULL)
		return 1;
	for (int r = 0; r < rounds; r++) {
		double gl = pairs(a, 8192, n), gm = pairs(m, 8192, n);
		double gnd = pairs(d, 8192, n), gg = pairs(g, 8192, n);
		double big = pairs(a, 256 << 10, n / 4), bignd = pairs(d, 256 << 10, n / 4);
		double off = pairs(a, 8192, n), on1k = pairs(pk, 8192, n), on100 = pairs(ph, 8192, n);
		double t0 = now();

		for (long i = 0; i < n; i++) {
			void *p = malloc(8192);
			__asm__ volatile("" : : "r"(p) : "memory");
			free(p);
		}
		double ml = (now() - t0) / (double)n * 1e9;

		bare = &nodes[0];
		nodes[0].next = NULL;
		t0 = now();
		for (long i = 0; i < n; i++) {
			struct node *x = bare;

			bare = x->next;
			__asm__ volatile("" : : "r"(x) : "memory");
			x->next = bare;
			bare = x;
		}
		double b = (now() - t0) / (double)n * 1e9;

		printf("round %d: ns per 8 KiB pair: gostack-lockfree %.2f, gostack-mutex %.2f, malloc %.2f, "
		    "bare thread-local list %.2f; gostack-lockfree / bare %.2fx, malloc / gostack-lockfree %.2fx\n",
		    r, gl, gm, ml, b, gl / b, ml / gl);
		printf("round %d: decay on (1000 ms) / off: 8 KiB %.2f / %.2f ns = %.2fx, 256 KiB %.2f / %.2f ns = %.2fx; "
		    "4 KiB guards: 8 KiB %.2f ns = %.2fx of unguarded\n",
		    r, gl, gnd, gl / gnd, big, bignd, big / bignd, gg, gg / gl);
		printf("round %d: depth profile, 8 KiB: off %.2f ns, 1 in 1000 %.2f ns = %.3fx, 1 in 100 %.2f ns = %.3fx\n",
		    r, off, on1k, on1k / off, on100, on100 / off);
	}
	return 0;
}
