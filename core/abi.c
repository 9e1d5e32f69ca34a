/*
 * abi.c: the older versions of functions whose structs grew (gostack.h:
 * "ABI"; cmake/gostack.map). A binary built against an older gostack.h
 * binds to these; each reads or writes exactly the layout that header
 * had, never a byte past it, and gives every newer field its zero default.
 *
 * Each frozen layout is spelled out below field by field, as the header of
 * its release declared it (tests/abi/0.1/gostack.h is that header, and
 * test_abi_old is built against it), so that a change to today's structs
 * cannot silently change what an old binary is given.
 *
 * Structs embedded in others (gostack_t, gostack_stats_t,
 * gostack_class_stats_t) never change: they are part of every layout.
 */
#include <stddef.h>
#include <string.h>

#include "internal.h"

/* ---- 0.1 (GOSTACK_0) ------------------------------------------------------ */

struct config_0 {
	gostack_backend_t backend;
	bool no_cache;
	bool debug;
	size_t guard_size;
	int decay_ms;
};

struct stats_detail_0 {
	gostack_stats_t total;
	gostack_class_stats_t order[GOSTACK_NUM_ORDERS];
	gostack_class_stats_t large;
	size_t heap_dirty_bytes;
	gostack_backend_t backend;
	bool no_cache;
	size_t guard_size;
	int decay_ms;
};

#if defined(__x86_64__) || defined(__aarch64__)
/* The sizes 0.1 binaries were built with on LP64 (a layout change here is an
 * ABI break, not a refactoring). */
_Static_assert(sizeof(struct config_0) == 24, "0.1 gostack_config_t is 24 bytes");
_Static_assert(sizeof(struct stats_detail_0) == 320, "0.1 gostack_stats_detail_t is 320 bytes");
#endif

/* Visible for the version script's .symver alias only (cmake/gostack.map's
 * local: * keeps the gostack__ name itself out of the dynamic table). */
GOSTACK_API gostack_allocator_t *gostack__allocator_new_0(const struct config_0 *old);
GOSTACK_API void gostack__allocator_stats_detail_0(gostack_allocator_t *a, struct stats_detail_0 *old);

gostack_allocator_t *
gostack__allocator_new_0(const struct config_0 *old)
{
	gostack_config_t cfg;

	if (old == NULL)
		return gostack_allocator_new(NULL);
	memset(&cfg, 0, sizeof cfg);
	cfg.backend = old->backend;
	cfg.no_cache = old->no_cache;
	cfg.debug = old->debug;
	cfg.guard_size = old->guard_size;
	cfg.decay_ms = old->decay_ms;
	return gostack_allocator_new(&cfg);
}

void
gostack__allocator_stats_detail_0(gostack_allocator_t *a, struct stats_detail_0 *old)
{
	gostack_stats_detail_t d;

	if (old == NULL)
		return;
	gostack_allocator_stats_detail(a, &d);
	memset(old, 0, sizeof *old);
	old->total = d.total;
	memcpy(old->order, d.order, sizeof old->order);
	old->large = d.large;
	old->heap_dirty_bytes = d.heap_dirty_bytes;
	old->backend = d.backend;
	old->no_cache = d.no_cache;
	old->guard_size = d.guard_size;
	old->decay_ms = d.decay_ms;
}

#if !defined(GOSTACK_TEST_NO_COMPAT)
__asm__(".symver gostack__allocator_new_0, gostack_allocator_new@GOSTACK_0");
__asm__(".symver gostack__allocator_stats_detail_0, gostack_allocator_stats_detail@GOSTACK_0");
#else
/* TEST ONLY (tests/broken-variants.sh): the old versions take the new
 * layouts, reading past an old binary's structs; test_abi_old must fail. */
GOSTACK_API gostack_allocator_t *gostack__broken_new_0(const gostack_config_t *cfg);
GOSTACK_API void gostack__broken_detail_0(gostack_allocator_t *a, gostack_stats_detail_t *out);
gostack_allocator_t *gostack__broken_new_0(const gostack_config_t *cfg) { return gostack_allocator_new(cfg); }
void gostack__broken_detail_0(gostack_allocator_t *a, gostack_stats_detail_t *out) { gostack_allocator_stats_detail(a, out); }
__asm__(".symver gostack__broken_new_0, gostack_allocator_new@GOSTACK_0");
__asm__(".symver gostack__broken_detail_0, gostack_allocator_stats_detail@GOSTACK_0");
#endif
