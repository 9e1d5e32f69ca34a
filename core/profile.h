/*
 * profile.h: the sampled depth profile (profile.c): how deep stacks really
 * go, per size class, for config.profile / GOSTACK_PROFILE.
 */
#ifndef GOSTACK_PROFILE_H
#define GOSTACK_PROFILE_H

#include "internal.h"

/* An allocator's counters: relaxed atomics, added to by whichever thread
 * frees a sampled stack, read by stats. */
struct gostack__profile {
	struct {
		_Atomic uint64_t samples, max;
		_Atomic uint64_t hist[GOSTACK_PROFILE_BUCKETS];
	} cls[GOSTACK_PROFILE_CLASSES];
	_Atomic uint64_t orphan_count;   /* allocations by threads without a cache */
};

/* Create / destroy a's counters (allocator_new / delete); false: ENOMEM. */
GOSTACK__HIDDEN bool gostack__profile_init(gostack_allocator_t *a);
GOSTACK__HIDDEN void gostack__profile_destroy(gostack_allocator_t *a);
/* Whether this allocation of a (profile on) is the one in N: each call
 * counts one allocation. t: the thread's cache for a, or NULL. */
GOSTACK__HIDDEN bool gostack__profile_take(gostack_allocator_t *a, struct gostack__tcache *t);
/* A sampled stack [lo, lo + n) of span s is handed out (clean: from the
 * reserve, its pages below the top page not resident) / is being freed
 * (before anything else of the free touches it); the free's result: it is
 * a small stack of more than one page whose pages below the top page are
 * not resident, fit for the freeing thread's reserve (internal.h). */
GOSTACK__HIDDEN void gostack__profile_handout(struct gostack__span *s, uintptr_t lo, size_t n, bool clean);
GOSTACK__HIDDEN bool gostack__profile_free(gostack_allocator_t *a, struct gostack__span *s, uintptr_t lo, size_t n);
/* Whether the stack at lo of span s is a sampled one (slow free path). */
static inline bool
gostack__profile_sampled(struct gostack__span *s, uintptr_t lo)
{
	uint32_t bits = gostack__span_sampled(s);

	return bits != 0 && (bits >> gostack__span_index(s, lo) & 1) != 0;
}
/* stats_detail's profile and depth[] of a. */
GOSTACK__HIDDEN void gostack__profile_stats(gostack_allocator_t *a, gostack_stats_detail_t *out);
/* stats_print's advice lines for d, into buf (at most cap bytes); returns
 * the length written. */
GOSTACK__HIDDEN size_t gostack__profile_print(const gostack_stats_detail_t *d, char *buf, size_t cap);

#endif /* GOSTACK_PROFILE_H */
