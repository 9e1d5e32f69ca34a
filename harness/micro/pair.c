/*
 * harness/micro/pair.c: the cached 8 KiB alloc+free pair against a bare
 * thread-local free list (the floor any cached path can reach) and malloc,
 * side by side in one process, several rounds. Run it plain and under
 * LD_PRELOAD of another malloc (harness/micro/run does both).
 * Output: one line per round, ns per pair.
 */
#include <gostack.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct node { struct node *next; };
static __thread struct node *bare;

static double
now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int
main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000000;
	int rounds = argc > 2 ? atoi(argv[2]) : 5;
	gostack_config_t lf = { .backend = GOSTACK_BACKEND_LOCKFREE }, mu = { .backend = GOSTACK_BACKEND_MUTEX };
	gostack_allocator_t *a = gostack_allocator_new(&lf), *m = gostack_allocator_new(&mu);
	static struct node nodes[2];

	if (a == NULL || m == NULL)
		return 1;
	for (int r = 0; r < rounds; r++) {
		double t0 = now();

		for (long i = 0; i < n; i++) {
			gostack_t s = gostack_allocator_alloc(a, 8192);
			__asm__ volatile("" : : "r"(s.lo) : "memory");
			gostack_allocator_free(a, s);
		}
		double g = (now() - t0) / (double)n * 1e9;

		t0 = now();
		for (long i = 0; i < n; i++) {
			gostack_t s = gostack_allocator_alloc(m, 8192);
			__asm__ volatile("" : : "r"(s.lo) : "memory");
			gostack_allocator_free(m, s);
		}
		double gm = (now() - t0) / (double)n * 1e9;

		t0 = now();
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
		    r, g, gm, ml, b, g / b, ml / g);
	}
	return 0;
}
