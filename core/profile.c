/*
 * profile.c: the sampled depth profile. One stack in config.profile (N) has
 * the deepest use made of it measured between its handout and its free,
 * without committing a page the coroutine never touched; the depths go into
 * a histogram per size class, with p50, p99 and max, in stats_detail and as
 * one advice line per class in stats_print.
 *
 * Which stacks: each thread's cache counts its allocations down from a
 * random draw in [1, 2N - 1] (mean N, so no periodic pattern of the
 * program's aliases with the sampling); threads without a cache share an
 * allocator-wide counter. With the profile off nothing of this runs: the
 * cached paths are the plain ones. With it on, the cached allocation is
 * stack.c's second copy, which adds the countdown (the test of the
 * allocator's flag that picks it is the plain copy's own, failing); the
 * cached free is the plain one: a span with a sampled stack live holds its
 * bit in the word the free compares lo with (span.h's lo_sampled), so the
 * test fails and the slow path measures the stack.
 *
 * How deep, without committing memory: a stack grows down from hi, so its
 * deepest use is hi minus the lowest address written.
 *   - Small stacks (< 32 KiB). Their top page is resident: the free-list
 *     link lives in its top 16 bytes and was written when the stack was
 *     carved or freed. At handout the rest of that top page (down to lo if
 *     the stack is smaller) is painted with a per-process 64-bit pattern,
 *     one word per 64-byte line, the line's highest (a stack grows down,
 *     so a frame enters its lowest line from above), and the pages below
 *     it are given back with MADV_DONTNEED (nothing in them is ours to
 *     keep: the stack was free). At free, the paint is scanned from its
 *     bottom: the first word changed gives the depth to 64 bytes. Then
 *     mincore() over the pages below: the lowest resident one, a page only
 *     the coroutine can have touched since the handout's MADV_DONTNEED,
 *     is the depth instead (page granularity). Always, not only when the
 *     paint's lowest word changed: a frame's buffer written only at its
 *     low end (read() into a local array) can reach below the top page
 *     and leave the paint above it untouched.
 *   - Large stacks. Nothing of gostack's lives in them and their top page
 *     may not be resident, so nothing is painted: the whole stack is given
 *     back at handout and mincore() at free finds the lowest resident page.
 * Every resident page counts, untouched pages above it or not (that
 * buffer again), but one: the bottom page alone, the page above it not
 * resident, is an overflow canary at lo (examples/http_demo.c writes
 * one), not depth. A stack used down to that page past an untouched one
 * reads as a page shallower than it is.
 * Painting writes only a page that is already resident, and MADV_DONTNEED
 * only lowers RSS, so an untouched sampled stack costs no more memory than
 * an unsampled one (tests/test_profile.c holds RSS to it). A coroutine
 * that writes the pattern itself, with chance 2^-64 per word, reads as
 * shallower by that word.
 * The reserve (internal.h's prof_clean): a sample of a small stack of more
 * than one page whose free finds no page below the top one resident (the
 * coroutine stayed in the top page: most do) is not pushed on the freeing
 * thread's list but kept, one per order, for that thread's next sample of
 * the order, which hands it out with nothing to give back to the OS: no
 * unsampled use came between, so its pages below the top page are still
 * not resident. It is a free stack of the thread's cache: counted as
 * cached, given back with the lists (stackcache_clear: flush, thread exit,
 * delete, fork). Not for debug allocators, whose free poisons the stack.
 * Cost per sample: a stack of one page (2 or 4 KiB), the paint and the scan
 * (no system call); larger small stacks, one madvise more at handout
 * (none from the reserve) and one mincore at free; large stacks, one madvise and one mincore per 16 MiB
 * of the stack's untouched part (scanned from lo up: a 1 GiB stack used a
 * little is 64 calls). Measured in the README ("Depth profile").
 *
 * Ordering: the sampled bit is set at handout by the allocating thread and
 * read and cleared at free by the freeing thread, ordered by the same
 * hand-off that orders every span field the free checks (span.h); the
 * counters are relaxed atomics read by stats.
 */
#include <stdio.h>
#include <string.h>

#include "mheap.h"
#include "profile.h"
#include "tools.h"

static inline uint64_t
pattern(void)
{
	return gostack__free_key ^ 0x5bd1e9955bd1e995ull;   /* never the free mark itself */
}

bool
gostack__profile_init(gostack_allocator_t *a)
{
	a->prof = gostack__meta_alloc(sizeof *a->prof);
	return a->prof != NULL;
}

void
gostack__profile_destroy(gostack_allocator_t *a)
{
	if (a->prof != NULL)
		gostack__meta_free(a->prof, sizeof *a->prof);
	a->prof = NULL;
}

/* A draw in [1, 2N - 1] (xorshift64*; seeded from the cache's address). */
static uint32_t
interval(struct gostack__tcache *t, unsigned n)
{
	uint64_t x = t->prof_rng != 0 ? t->prof_rng : ((uint64_t)(uintptr_t)t | 1) * 0x9e3779b97f4a7c15ull;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	t->prof_rng = x;
	if (n <= 1)
		return 1;
	return 1 + (uint32_t)((x * 0x2545f4914f6cdd1dull >> 33) % (2ull * n - 1));
}

bool
gostack__profile_take(gostack_allocator_t *a, struct gostack__tcache *t)
{
	if (t == NULL)   /* relaxed: a counter; which cacheless allocation is the one does not matter */
		return atomic_fetch_add_explicit(&a->prof->orphan_count, 1, memory_order_relaxed) % a->profile == 0;
	if (t->prof_left == 0)
		t->prof_left = interval(t, a->profile);   /* the first draw */
	if (t->prof_left > 1) {
		t->prof_left--;
		return false;
	}
	t->prof_left = interval(t, a->profile);
	return true;
}

/* One painted word per line, at its top; the top line (the link's) is not
 * painted. */
#define PAINT_LINE 64
#define PAINT_OFF (PAINT_LINE - 8)

/* The bottom of the painted part of a small stack: its top page, or lo. */
static inline uintptr_t
paint_lo(uintptr_t lo, size_t n)
{
	uintptr_t hi = lo + n, top = (hi - 1) & ~(uintptr_t)(gostack__os_page() - 1);

	return top > lo ? top : lo;
}

void
gostack__profile_handout(struct gostack__span *s, uintptr_t lo, size_t n, bool clean)
{
	uint64_t bit = (uint64_t)1 << (32 + gostack__span_index(s, lo));

	atomic_fetch_or_explicit(&s->lo_sampled, bit, memory_order_relaxed);
	if (!gostack__is_small(n)) {
		gostack__os_decommit((void *)lo, n);
		return;
	}
	uintptr_t p = paint_lo(lo, n);
	uint64_t pat = pattern();

	for (uintptr_t w = p + PAINT_OFF; w < lo + n - PAINT_LINE; w += PAINT_LINE)
		*(uint64_t *)w = pat;
	if (p > lo && !clean)
		gostack__os_decommit((void *)lo, p - lo);
}

/* The deepest use of [lo, top) (top page-aligned, every page of it given
 * back at the handout) that residency shows: the lowest resident page, or
 * top if none is. Every resident page counts, with untouched ones above it
 * or not: a frame's buffer the coroutine wrote only at its low end (read()
 * into a local array) leaves the pages between untouched. One exception:
 * the bottom page alone, the page above it in the range not resident, is
 * an overflow canary at lo (examples/http_demo.c writes one), not depth.
 * Scanned from lo up, so the cost is the untouched part's. */
static uintptr_t
resident_lowest(uintptr_t lo, uintptr_t top, bool *known)
{
	size_t pg = gostack__os_page();
	unsigned char vec[4096];

	*known = true;
	for (uintptr_t base = lo; base < top;) {
		size_t pages = (top - base) / pg, chunk = pages < sizeof vec ? pages : sizeof vec;

		if (gostack__os_resident((void *)base, chunk * pg, vec) != 0) {
			*known = false;
			return top;   /* cannot tell: count no deeper than the paint saw */
		}
		for (size_t i = 0; i < chunk; i++) {
			if (!(vec[i] & 1))
				continue;
			if (base == lo && i == 0 && chunk > 1 && !(vec[1] & 1))
				continue;   /* the canary's page */
			return base + i * pg;
		}
		base += chunk * pg;
	}
	return top;
}

bool
gostack__profile_free(gostack_allocator_t *a, struct gostack__span *s, uintptr_t lo, size_t n)
{
	uint64_t bit = (uint64_t)1 << (32 + gostack__span_index(s, lo));
	uintptr_t hi = lo + n, deepest;
	bool known, clean = false;

	atomic_fetch_and_explicit(&s->lo_sampled, ~bit, memory_order_relaxed);
	if (!gostack__is_small(n)) {
		deepest = resident_lowest(lo, hi, &known);
	} else {
		uintptr_t p = paint_lo(lo, n), end = hi - PAINT_LINE, w = p;
		uint64_t pat = pattern();

		gostack__tool_read(p, hi - p);   /* Valgrind: the coroutine's dead frames are data here */
		while (w < end && *(const uint64_t *)(w + PAINT_OFF) == pat)
			w += PAINT_LINE;
		deepest = w == end ? hi : w;   /* end: no painted line changed (the top line is the link's) */
		if (p > lo) {   /* a page below the top one used is deeper than any line of it */
			uintptr_t r = resident_lowest(lo, p, &known);

			if (r < p)
				deepest = r;
			clean = known && r == p;
		}
	}
	size_t depth = hi - deepest;
	int c = gostack__class_of(n);
	int b = depth == 0 ? 0 : (int)(((uint64_t)depth * GOSTACK_PROFILE_BUCKETS - 1) / n);
	struct gostack__profile *pr = a->prof;

	atomic_fetch_add_explicit(&pr->cls[c].samples, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&pr->cls[c].hist[b], 1, memory_order_relaxed);
	uint64_t m = atomic_load_explicit(&pr->cls[c].max, memory_order_relaxed);

	while (depth > m && !atomic_compare_exchange_weak_explicit(&pr->cls[c].max, &m, depth,
	    memory_order_relaxed, memory_order_relaxed))
		;
	return clean;
}

/* The upper bound of the bucket holding the q-quantile (q in 1/1000s). */
static size_t
quantile(const gostack_depth_stats_t *d, unsigned q)
{
	uint64_t want = (d->samples * q + 999) / 1000, seen = 0;

	for (int i = 0; i < GOSTACK_PROFILE_BUCKETS; i++) {
		seen += d->hist[i];
		if (seen >= want && seen != 0) {
			size_t ub = (size_t)(i + 1) * (d->size / GOSTACK_PROFILE_BUCKETS);

			return ub < d->max ? ub : d->max;
		}
	}
	return d->max;
}

void
gostack__profile_stats(gostack_allocator_t *a, gostack_stats_detail_t *out)
{
	out->profile = a->profile;
	for (int c = 0; c < GOSTACK_PROFILE_CLASSES; c++) {
		gostack_depth_stats_t *d = &out->depth[c];

		d->size = gostack__class_size(c);
		if (a->prof == NULL)
			continue;
		d->samples = atomic_load_explicit(&a->prof->cls[c].samples, memory_order_relaxed);
		d->max = (size_t)atomic_load_explicit(&a->prof->cls[c].max, memory_order_relaxed);
		uint64_t sum = 0;

		for (int i = 0; i < GOSTACK_PROFILE_BUCKETS; i++)
			sum += d->hist[i] = atomic_load_explicit(&a->prof->cls[c].hist[i], memory_order_relaxed);
		d->samples = sum;   /* one snapshot: the quantiles agree with the histogram */
		d->p50 = quantile(d, 500);
		d->p99 = quantile(d, 990);
	}
}

/* "12 KiB", "1.5 KiB", "640 B", "2 MiB". */
static void
human(char *buf, size_t cap, size_t v)
{
	if (v >= ((size_t)1 << 20) && v % ((size_t)1 << 20) == 0)
		snprintf(buf, cap, "%zu MiB", v >> 20);
	else if (v >= 1024 && v % 1024 == 0)
		snprintf(buf, cap, "%zu KiB", v >> 10);
	else if (v >= 1024)
		snprintf(buf, cap, "%.1f KiB", (double)v / 1024);
	else
		snprintf(buf, cap, "%zu B", v);
}

size_t
gostack__profile_print(const gostack_stats_detail_t *d, char *buf, size_t cap)
{
	size_t n = 0;

	for (int c = 0; c < GOSTACK_PROFILE_CLASSES && n < cap; c++) {
		const gostack_depth_stats_t *x = &d->depth[c];
		char sz[32], p99[32], p50[32], mx[32], fit[32], advice[96];

		if (x->samples == 0)
			continue;
		human(sz, sizeof sz, x->size);
		human(p99, sizeof p99, x->p99);
		human(p50, sizeof p50, x->p50);
		human(mx, sizeof mx, x->max);
		size_t good = gostack_good_size(x->p99 != 0 ? x->p99 : 1);

		if (x->max == 0)
			snprintf(advice, sizeof advice, "none was used: freed before anything ran on them");
		else if (x->max >= x->size)
			snprintf(advice, sizeof advice, "some reached the bottom: larger stacks may be needed");
		else if (good < x->size) {
			human(fit, sizeof fit, good);
			snprintf(advice, sizeof advice, "%s stacks would do", fit);
		} else
			snprintf(advice, sizeof advice, "the size fits");
		int w = snprintf(buf + n, cap - n, "gostack: %s stacks: p99 depth %s over %llu samples (%s); p50 %s, max %s\n",
		    sz, p99, (unsigned long long)x->samples, advice, p50, mx);
		if (w < 0)
			break;
		n += (size_t)w < cap - n ? (size_t)w : cap - n - 1;
	}
	return n;
}
