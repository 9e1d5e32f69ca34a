/*
 * harness/micro/churn.c: bulk churn, the pattern of a server whose
 * connections arrive and leave together. N stacks of SIZE bytes are
 * allocated (the top 4 KiB of each touched, where a coroutine's first frames
 * land), then all freed; ROUNDS times, for each backend side by side in one
 * process. Per round: milliseconds, /proc/self/maps lines, RSS, and the
 * allocator's mapped and the heap's dirty bytes, so that what the kernel
 * says can be held against what gostack says.
 *
 * Usage: gostack_micro_churn [N [SIZE [ROUNDS [GUARD]]]]   (20000 65536 6 0)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gostack.h"
#include "../../tests/proc.h"

static double
now_ms(void)
{
	return proc_now() * 1e3;
}

int
main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 20000;
	size_t size = argc > 2 ? strtoul(argv[2], NULL, 0) : 65536;
	int rounds = argc > 3 ? atoi(argv[3]) : 6;
	size_t guard = argc > 4 ? strtoul(argv[4], NULL, 0) : 0;
	gostack_t *s = calloc(n, sizeof *s);
	static const struct { const char *name; gostack_backend_t b; } backends[] = {
		{ "mutex", GOSTACK_BACKEND_MUTEX }, { "lockfree", GOSTACK_BACKEND_LOCKFREE },
	};

	if (s == NULL)
		return 2;
	printf("bulk churn: %zu stacks of %zu bytes, top 4 KiB touched, guard %zu, %d rounds\n", n, size, guard, rounds);
	printf("%-9s %5s %9s %7s %9s %9s %11s %11s\n", "backend", "round", "ms", "maps", "rss_MiB", "rss_free", "mapped_MiB",
	    "dirty_MiB");
	for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++) {
		gostack_config_t cfg;

		memset(&cfg, 0, sizeof cfg);
		cfg.backend = backends[b].b;
		cfg.guard_size = guard;
		gostack_allocator_t *a = gostack_allocator_new(&cfg);

		if (a == NULL) {
			perror("gostack_allocator_new");
			return 2;
		}
		for (int r = 0; r < rounds; r++) {
			double t0 = now_ms();

			for (size_t i = 0; i < n; i++) {
				s[i] = gostack_allocator_alloc(a, size);
				if (s[i].lo == 0) {
					perror("gostack_allocator_alloc");
					return 1;
				}
				memset((void *)(s[i].hi - 4096), 1, 4096);
			}
			double rss_live = ((double)proc_rss_bytes() / 1048576.0);

			for (size_t i = 0; i < n; i++)
				gostack_allocator_free(a, s[i]);
			double t1 = now_ms();
			gostack_stats_detail_t d;

			gostack_allocator_stats_detail(a, &d);
			printf("%-9s %5d %9.1f %7ld %9.1f %9.1f %11.1f %11.1f\n", backends[b].name, r, t1 - t0, proc_maps_lines(),
			    rss_live, ((double)proc_rss_bytes() / 1048576.0), (double)d.total.mapped_bytes / 1048576.0,
			    (double)d.heap_dirty_bytes / 1048576.0);
			fflush(stdout);
		}
		gostack_thread_flush();
		gostack_allocator_reclaim(a);
		gostack_allocator_delete(a);
	}
	free(s);
	return 0;
}
