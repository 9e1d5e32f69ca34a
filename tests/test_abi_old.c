/*
 * test_abi_old: a program built against the gostack.h of 0.1 (tests/abi/0.1,
 * as released at 708c3f3) and linked as 0.1's binaries were (needs
 * GOSTACK_0: tests/abi/stub-0.1.c), run against today's libgostack.so.0.
 *
 * Its structs are the old, shorter ones. Each is placed flush against a
 * PROT_NONE page, so that the library reading or writing one byte past it
 * crashes the test, and the bytes that a newer struct would have there are
 * garbage in the neighbouring copy (0xa5 everywhere, padding included): the
 * library must behave exactly as with zeros. The broken variant
 * GOSTACK_TEST_NO_COMPAT (tests/broken-variants.sh) must fail here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gostack.h"   /* 0.1's */

#if GOSTACK_VERSION_MINOR != 1
#error "test_abi_old must be built against tests/abi/0.1/gostack.h"
#endif

static int passed, failed;

#define CHECK(expr) do { if (expr) passed++; else { failed++; \
	fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr); } } while (0)

/* n bytes that end where a PROT_NONE page begins. */
static void *
flush_against_guard(size_t n)
{
	long pg = sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED || mprotect(p + pg, (size_t)pg, PROT_NONE) != 0) {
		perror("test_abi_old: mmap");
		exit(2);
	}
	return p + pg - n;
}

/* stats_print's lines with the allocator's address taken out. */
static void
printed(gostack_allocator_t *a, char *buf, size_t len)
{
	char tmpl[] = "/tmp/gostack-abi-XXXXXX", ptr[32];
	int fd = mkstemp(tmpl);
	ssize_t n;

	if (fd < 0) {
		perror("mkstemp");
		exit(2);
	}
	unlink(tmpl);
	CHECK(gostack_allocator_stats_print(a, fd) == 0);
	n = pread(fd, buf, len - 1, 0);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	snprintf(ptr, sizeof ptr, "%p", (void *)a);
	char *at = strstr(buf, ptr);
	if (at != NULL)
		memmove(at, at + strlen(ptr), strlen(at + strlen(ptr)) + 1);
}

/* One configuration, made twice: zeros after the struct, then garbage. */
static void
same_behaviour(const char *what, gostack_config_t want)
{
	gostack_config_t *z = flush_against_guard(sizeof *z), *g = flush_against_guard(sizeof *g);
	gostack_stats_detail_t *dz = flush_against_guard(sizeof *dz), *dg = flush_against_guard(sizeof *dg);
	char pz[4096], pg[4096];

	memset(z, 0, sizeof *z);
	z->backend = want.backend;
	z->no_cache = want.no_cache;
	z->debug = want.debug;
	z->guard_size = want.guard_size;
	z->decay_ms = want.decay_ms;
	memset(g, 0xa5, sizeof *g);   /* padding too: whatever a newer layout would read */
	g->backend = want.backend;
	g->no_cache = want.no_cache;
	g->debug = want.debug;
	g->guard_size = want.guard_size;
	g->decay_ms = want.decay_ms;

	gostack_allocator_t *az = gostack_allocator_new(z), *ag = gostack_allocator_new(g);

	CHECK(az != NULL);
	CHECK(ag != NULL);
	if (az == NULL || ag == NULL) {
		fprintf(stderr, "test_abi_old: %s: gostack_allocator_new: %s\n", what, strerror(errno));
		return;
	}
	gostack_t s[2][3];
	gostack_allocator_t *as[2] = { az, ag };

	for (int i = 0; i < 2; i++) {
		s[i][0] = gostack_allocator_alloc(as[i], 8192);
		s[i][1] = gostack_allocator_alloc(as[i], 64 << 10);
		s[i][2] = gostack_allocator_alloc(as[i], 3000);
		for (int j = 0; j < 3; j++) {
			CHECK(s[i][j].lo != 0);
			((volatile char *)s[i][j].hi)[-1] = 1;
		}
	}
	CHECK(s[0][2].hi - s[0][2].lo == 4096 && s[1][2].hi - s[1][2].lo == 4096);
	memset(dz, 0xa5, sizeof *dz);
	memset(dg, 0xa5, sizeof *dg);
	gostack_allocator_stats_detail(az, dz);
	gostack_allocator_stats_detail(ag, dg);
	CHECK(dz->total.allocs == 3 && dg->total.allocs == 3);
	CHECK(dz->total.inuse_bytes == 8192 + (64 << 10) + 4096);
	CHECK(dz->total.inuse_bytes == dg->total.inuse_bytes);
	CHECK(dz->backend == dg->backend && dz->no_cache == dg->no_cache);
	CHECK(dz->guard_size == dg->guard_size && dz->decay_ms == dg->decay_ms);
	CHECK(dz->no_cache == want.no_cache);
	CHECK(want.guard_size == 0 ? dz->guard_size == 0 : dz->guard_size >= want.guard_size);
	CHECK(dz->decay_ms == (want.decay_ms == 0 ? 1000 : want.decay_ms < 0 ? -1 : want.decay_ms));
	CHECK(want.backend == GOSTACK_BACKEND_DEFAULT || dz->backend == want.backend);
	printed(az, pz, sizeof pz);
	printed(ag, pg, sizeof pg);
	CHECK(strcmp(pz, pg) == 0);
	if (strcmp(pz, pg) != 0)
		fprintf(stderr, "test_abi_old: %s: stats_print differs:\n%s---\n%s", what, pz, pg);
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 3; j++)
			gostack_allocator_free(as[i], s[i][j]);
	gostack_thread_flush();
	CHECK(gostack_allocator_delete(az) == 0);
	CHECK(gostack_allocator_delete(ag) == 0);
	printf("ok: %s: zeros and garbage after the 0.1 config behave the same\n", what);
}

int
main(void)
{
	printf("test_abi_old: built against gostack.h %d.%d.%d, running libgostack %u.%u.%u\n",
	    GOSTACK_VERSION_MAJOR, GOSTACK_VERSION_MINOR, GOSTACK_VERSION_PATCH, gostack_version() >> 16,
	    (gostack_version() >> 8) & 0xff, gostack_version() & 0xff);
	CHECK(gostack_version() >= GOSTACK_VERSION_NUMBER);
	CHECK(gostack_version() >> 16 == GOSTACK_VERSION_MAJOR);

	same_behaviour("defaults", (gostack_config_t){ .backend = GOSTACK_BACKEND_DEFAULT });
	same_behaviour("mutex", (gostack_config_t){ .backend = GOSTACK_BACKEND_MUTEX });
	same_behaviour("lockfree, no cache", (gostack_config_t){ .backend = GOSTACK_BACKEND_LOCKFREE, .no_cache = true });
	same_behaviour("debug", (gostack_config_t){ .debug = true });
	same_behaviour("guard", (gostack_config_t){ .guard_size = 4096 });
	same_behaviour("no decay", (gostack_config_t){ .decay_ms = -1 });

	/* The default allocator and the stats the old header knows. */
	gostack_stats_t *st = flush_against_guard(sizeof *st);
	gostack_t d = gostack_alloc(16384);

	CHECK(d.lo != 0 && d.hi - d.lo == 16384);
	gostack_allocator_stats(gostack_default_allocator(), st);
	CHECK(st->inuse_bytes >= 16384);
	gostack_free(d);
	CHECK(gostack_allocator_new(&(gostack_config_t){ .guard_size = (size_t)2 << 30 }) == NULL && errno == EINVAL);

	printf("%d passed, %d failed, 0 skipped\n", passed, failed);
	return failed != 0;
}
