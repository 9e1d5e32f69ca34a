/*
 * tools.h: what gostack tells AddressSanitizer and Valgrind about stacks.
 *
 * Every place a stack changes hands calls one of these hooks:
 *   gostack__tool_alloc(lo, n)     a stack is handed to the user
 *   gostack__tool_free(lo, n)      the user gave a stack back; a small
 *                                  stack's top 16 bytes, where the caches
 *                                  and pools keep its link, must stay
 *                                  accessible
 *   gostack__tool_prefree(lo, n)   debug mode is about to write its poison
 *                                  into a stack being freed (Valgrind: the
 *                                  coroutine's popped frames were no-access)
 *   gostack__tool_span_free(p, n)  a span's memory goes back to the heap:
 *                                  called for each of its stacks [p, p + n)
 *   gostack__tool_read(lo, n)      gostack reads a live stack's bytes as
 *                                  data (the depth profile's scan)
 * Builds without a sanitizer or the Valgrind option compile them to nothing.
 *
 * AddressSanitizer (-fsanitize=address): a free stack is poisoned but for a
 * small stack's link (ASan reports a use after free as "use-after-poison") and
 * unpoisoned when handed out again, which also clears the redzones of frames
 * a coroutine left on it. ASan's shadow is 1/8 of the memory it describes and
 * (un)poisoning writes it, committing it: unpoisoning a whole 1 GiB stack
 * costs 128 MiB of shadow and ~0.4 s. So stacks up to 1 MiB are poisoned and
 * unpoisoned whole; a larger stack only in its lowest 4 KiB and its top
 * 1 MiB (where a coroutine's frames are: stacks grow down from hi), at most
 * 129 KiB of shadow per call. A span going back to the heap is unpoisoned in
 * the same ranges, which are all gostack ever poisons in it.
 *
 * Valgrind (GOSTACK_VALGRIND: on by default wherever valgrind.h is found;
 * tools.c): a stack handed out is registered with VALGRIND_STACK_REGISTER
 * (so memcheck takes a switch onto it for a stack switch, not a huge
 * stack-pointer move) and marked undefined; a free stack is deregistered and
 * marked no-access but for a small stack's link, which is marked defined
 * before the free reads its double-free mark.
 * The inline cached paths call only the _fast hooks, which are ASan's and
 * nothing else: an allocator created under Valgrind is never `fast`
 * (gostack__tool_slow_only), so under Valgrind every operation takes the
 * slow paths and their hooks, and outside it the cached paths carry no
 * client request at all. The slow paths' hooks cost one client request
 * (a few no-op instructions) outside Valgrind.
 */
#ifndef GOSTACK_TOOLS_H
#define GOSTACK_TOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "span.h"

#if defined(__SANITIZE_ADDRESS__)
#define GOSTACK__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GOSTACK__ASAN 1
#endif
#endif

/* The bytes at the top of a free stack of n bytes that hold its free-list
 * link (small stacks only: span.h): never poisoned. */
#define GOSTACK__TOOL_LINK(n) ((n) < GOSTACK__SPAN_SIZE ? GOSTACK__LINK_SIZE : (size_t)0)
/* Stacks over FULL are (un)poisoned in [lo, lo + LOW) and [hi - TOP, hi) only. */
#define GOSTACK__TOOL_FULL ((size_t)1 << 20)
#define GOSTACK__TOOL_LOW ((size_t)4 << 10)
#define GOSTACK__TOOL_TOP ((size_t)1 << 20)

#if defined(GOSTACK__ASAN)
#include <sanitizer/asan_interface.h>

/* The ranges of [lo, lo + n - keep) the ASan hooks cover. */
static inline void
gostack__asan_ranges(uintptr_t lo, size_t n, size_t keep, int poison)
{
	if (n <= GOSTACK__TOOL_FULL) {
		if (poison)
			ASAN_POISON_MEMORY_REGION((void *)lo, n - keep);
		else
			ASAN_UNPOISON_MEMORY_REGION((void *)lo, n - keep);
		return;
	}
	if (poison) {
		ASAN_POISON_MEMORY_REGION((void *)lo, GOSTACK__TOOL_LOW);
		ASAN_POISON_MEMORY_REGION((void *)(lo + n - GOSTACK__TOOL_TOP), GOSTACK__TOOL_TOP - keep);
	} else {
		ASAN_UNPOISON_MEMORY_REGION((void *)lo, GOSTACK__TOOL_LOW);
		ASAN_UNPOISON_MEMORY_REGION((void *)(lo + n - GOSTACK__TOOL_TOP), GOSTACK__TOOL_TOP - keep);
	}
}

static inline void gostack__tool_alloc(uintptr_t lo, size_t n) { gostack__asan_ranges(lo, n, 0, 0); }
static inline void gostack__tool_free(uintptr_t lo, size_t n) { gostack__asan_ranges(lo, n, GOSTACK__TOOL_LINK(n), 1); }
static inline void gostack__tool_span_free(uintptr_t p, size_t n) { gostack__asan_ranges(p, n, 0, 0); }
static inline void gostack__tool_prefree(uintptr_t lo, size_t n) { (void)lo; (void)n; }
static inline bool gostack__tool_slow_only(void) { return false; }
static inline void gostack__tool_read(uintptr_t lo, size_t n) { (void)lo; (void)n; }
#define gostack__tool_alloc_fast gostack__tool_alloc
#define gostack__tool_free_fast gostack__tool_free

#elif defined(GOSTACK_VALGRIND)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>

void gostack__vg_alloc(uintptr_t lo, size_t n);
void gostack__vg_free(uintptr_t lo, size_t n);
void gostack__vg_span_free(uintptr_t p, size_t n);

static inline void gostack__tool_alloc(uintptr_t lo, size_t n) { if (RUNNING_ON_VALGRIND) gostack__vg_alloc(lo, n); }
static inline void gostack__tool_free(uintptr_t lo, size_t n) { if (RUNNING_ON_VALGRIND) gostack__vg_free(lo, n); }
static inline void gostack__tool_span_free(uintptr_t p, size_t n) { if (RUNNING_ON_VALGRIND) gostack__vg_span_free(p, n); }
static inline void gostack__tool_prefree(uintptr_t lo, size_t n) { (void)VALGRIND_MAKE_MEM_UNDEFINED(lo, n); }
/* Whether allocators must skip the inline cached paths (checked at creation:
 * a process does not start running under Valgrind later). */
static inline bool gostack__tool_slow_only(void) { return RUNNING_ON_VALGRIND != 0; }
/* gostack reads a live stack's contents as data (profile.c's scan). */
static inline void gostack__tool_read(uintptr_t lo, size_t n) { (void)VALGRIND_MAKE_MEM_DEFINED(lo, n); }
static inline void gostack__tool_alloc_fast(uintptr_t lo, size_t n) { (void)lo; (void)n; }
static inline void gostack__tool_free_fast(uintptr_t lo, size_t n) { (void)lo; (void)n; }

#else
static inline void gostack__tool_alloc(uintptr_t lo, size_t n) { (void)lo; (void)n; }
static inline void gostack__tool_free(uintptr_t lo, size_t n) { (void)lo; (void)n; }
static inline void gostack__tool_span_free(uintptr_t p, size_t n) { (void)p; (void)n; }
static inline void gostack__tool_prefree(uintptr_t lo, size_t n) { (void)lo; (void)n; }
static inline bool gostack__tool_slow_only(void) { return false; }
static inline void gostack__tool_read(uintptr_t lo, size_t n) { (void)lo; (void)n; }
static inline void gostack__tool_alloc_fast(uintptr_t lo, size_t n) { (void)lo; (void)n; }
static inline void gostack__tool_free_fast(uintptr_t lo, size_t n) { (void)lo; (void)n; }
#endif

#endif /* GOSTACK_TOOLS_H */
