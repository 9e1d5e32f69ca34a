/*
 * mheap.c: Go's page heap for stacks (allocManual / freeManual / spanOf)
 * and its scavenger. The heap knows no allocator: it is given a span's
 * geometry and decay deadline, and calls nothing above os.c.
 *
 * Memory comes from the OS in a few large reservations, "arenas": a power of
 * two of at least 64 MiB, 64 MiB-aligned, readable and writable, committed
 * lazily. Each arena grows with the heap (64 MiB, then the total reserved so
 * far, at most 1 GiB per step; a 1 GiB stack gets a 2 GiB arena), so
 * /proc/self/maps gains one line per arena, never one per stack.
 *
 * Inside an arena a binary buddy allocator hands out blocks of 2^k units of
 * 32 KiB: every span (a 32 KiB pool span or a large stack) is a power of two
 * >= 32 KiB, so spans are naturally aligned and buddies coalesce on free.
 * The arena's first units hold its header, one struct gostack__span per unit
 * and the dirty bitmap (out-of-line metadata: nothing is stored in a stack).
 *
 * spanOf: a flat table with one entry per 64 MiB of the 48-bit address space
 * (4 Mi entries, one 32 MiB lazily committed mapping) points at the span
 * struct of the chunk's first unit; the unit index within the chunk picks the
 * span. Two dependent loads, no lock, never a read of memory gostack does
 * not own.
 *
 * Dirty memory (Go's pallocData keeps its scavenged bits per page; this heap
 * keeps a dirty bit per 32 KiB unit). A unit is dirty while it is free and
 * may hold committed pages: a freed span's units become dirty, each with the
 * decay deadline its span was freed with (spans[u].decay_at); a scavenge
 * gives a dirty unit's pages back (MADV_DONTNEED) and clears its bit; a unit
 * handed out again leaves the dirty set. Merging and splitting buddy blocks
 * move no bit, so a merged block never makes clean memory look dirty, and
 * heap_dirty_bytes is exactly 32 KiB per dirty unit. The heap keeps at most
 * GOSTACK__HEAP_RETAIN dirty bytes process-wide and scavenges them all when
 * a free passes that, and on every reclaim; so a span that empties and
 * refills in a loop costs no syscall and no page fault (on a virtual machine
 * a DONTNEED's TLB flush can cost 100 us), and the memory is back when
 * reclaim returns. Free memory is never unmapped piecewise, so the number of
 * mappings does not depend on how many spans come and go.
 *
 * Whole arenas go back in two steps: gostack__heap_detach_empty() takes every
 * arena that holds no span out of the heap and the spanOf table (no span can
 * be carved from it any more), then, once the caller knows that no thread
 * can still read its metadata (the lock-free pools' grace period, core/
 * pools.c), gostack__heap_unmap() unmaps them.
 *
 * Locking: one heap lock (Go's mheap.lock), taken after any pool lock; no
 * other gostack lock is taken under it.
 */
#include <string.h>

#include "mheap.h"

#define ARENA_STEP_MAX ((size_t)1 << 30)

static pthread_mutex_t heap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct gostack__arena *arenas;   /* heap lock */
static size_t reserved;                 /* heap lock: bytes in arenas */
static size_t dirty_units;              /* heap lock: dirty bits set, all arenas */
/* Stack memory given back to the OS since start (dirty units scavenged, or
 * unmapped with their arena): written under the heap lock, read by stats
 * without it (relaxed: a counter, nothing is published through it). */
static _Atomic uint64_t released_bytes;
/* The same, by this thread's calls: what gostack_allocator_reclaim tells its
 * caller (the heap's retain bound may scavenge in the middle of it). */
static __thread uint64_t released_here;
static uint64_t dirty_next = UINT64_MAX;/* heap lock: <= the earliest decay_at of a dirty unit */
_Atomic(struct gostack__span *) *_Atomic gostack__arena_table;

#ifdef GOSTACK_TEST_HOOKS
/* Test builds only: free heap memory is made a guard region (any access
 * faults) and opened again when handed out, so that a thread touching memory
 * after it went back to the heap crashes (tests/test_lockfree.c). */
_Atomic int gostack__test_guard_free;
#endif

struct gostack__span *
gostack__span_of(uintptr_t addr)
{
	return gostack__span_of_inline(addr);
}

static struct gostack__arena *
arena_of_span(struct gostack__span *s)
{
	/* The span array lies in the arena's first 64 MiB, which starts at base. */
	return (struct gostack__arena *)((uintptr_t)s & ~(uintptr_t)(GOSTACK__ARENA_GRAN - 1));
}

static size_t
unit_of(struct gostack__arena *ar, struct gostack__span *s)
{
	return (size_t)(s - ar->spans);
}

static inline bool
dirty_test(const struct gostack__arena *ar, size_t u)
{
	return (ar->dirty[u >> 6] >> (u & 63)) & 1;
}

/* Units [u, u + n) leave the dirty set (handed out, or scavenged). */
static void
dirty_clear(struct gostack__arena *ar, size_t u, size_t n)
{
	for (size_t i = u; i < u + n; i++) {
		if (dirty_test(ar, i)) {
			ar->dirty[i >> 6] &= ~((uint64_t)1 << (i & 63));
			dirty_units--;
		}
	}
}

/* Units [u, u + n) are free and may hold committed pages until decay_at. */
static void
dirty_set(struct gostack__arena *ar, size_t u, size_t n, uint64_t decay_at)
{
	for (size_t i = u; i < u + n; i++) {
		if (!dirty_test(ar, i)) {
			ar->dirty[i >> 6] |= (uint64_t)1 << (i & 63);
			dirty_units++;
		}
		ar->spans[i].decay_at = decay_at;
	}
	if (decay_at < dirty_next)
		dirty_next = decay_at;
}

static void
free_insert(struct gostack__arena *ar, size_t u, unsigned h)
{
	struct gostack__span *s = &ar->spans[u];

	s->horder = (uint8_t)h;
	LIST_INSERT_HEAD(&ar->free[h], s, hlink);
	atomic_store_explicit(&s->alloc, NULL, memory_order_relaxed);
	gostack__span_set_state(s, GOSTACK__SPAN_FREE);
}

static void
free_remove(struct gostack__span *s)
{
	LIST_REMOVE(s, hlink);
	gostack__span_set_state(s, GOSTACK__SPAN_NONE);
}

/* Free block (u, h): coalesce with free buddies, then list it. Dirty bits
 * stay with their units. */
static void
free_block(struct gostack__arena *ar, size_t u, unsigned h)
{
	ar->free_units += (size_t)1 << h;
	while (h < ar->max_horder) {
		size_t b = u ^ ((size_t)1 << h);
		struct gostack__span *bs = &ar->spans[b];

		if (atomic_load_explicit(&bs->state, memory_order_relaxed) != GOSTACK__SPAN_FREE ||
		    bs->horder != h)
			break;
		free_remove(bs);
		u &= ~((size_t)1 << h);
		gostack__span_set_state(&ar->spans[u ^ ((size_t)1 << h)], GOSTACK__SPAN_NONE);
		h++;
	}
	free_insert(ar, u, h);
}

/* A block of 2^h units, split from the smallest free block that fits, its
 * units out of the dirty set; or SIZE_MAX. */
static size_t
alloc_block(struct gostack__arena *ar, unsigned h)
{
	unsigned j = h;

	while (j <= ar->max_horder && LIST_EMPTY(&ar->free[j]))
		j++;
	if (j > ar->max_horder)
		return SIZE_MAX;
	struct gostack__span *s = LIST_FIRST(&ar->free[j]);
	size_t u = unit_of(ar, s);

	free_remove(s);
	while (j > h) {
		j--;
		free_insert(ar, u + ((size_t)1 << j), j);
	}
	ar->free_units -= (size_t)1 << h;
	dirty_clear(ar, u, (size_t)1 << h);
	return u;
}

/* Go's scavenger: dirty units whose deadline is <= until back to the OS
 * (UINT64_MAX: all of them), one madvise per run of adjacent units;
 * recomputes dirty_next. The units are free and the heap lock is held, so
 * nobody can be using them. Returns bytes. */
static size_t
scavenge_locked(uint64_t until)
{
	size_t n = 0;

	dirty_next = UINT64_MAX;
	for (struct gostack__arena *ar = arenas; ar != NULL && dirty_units != 0; ar = ar->next) {
		size_t run = 0, run_len = 0;

		for (size_t w = 0; w < (ar->nunits + 63) / 64; w++) {
			uint64_t bits = ar->dirty[w];

			while (bits != 0) {
				size_t u = w * 64 + (size_t)__builtin_ctzll(bits);

				bits &= bits - 1;
				if (ar->spans[u].decay_at > until) {
					if (ar->spans[u].decay_at < dirty_next)
						dirty_next = ar->spans[u].decay_at;
					continue;
				}
				if (run_len != 0 && run + run_len != u) {
					gostack__os_decommit((void *)(ar->base + (run << GOSTACK__SPAN_SHIFT)),
					    run_len << GOSTACK__SPAN_SHIFT);
					run_len = 0;
				}
				if (run_len == 0)
					run = u;
				run_len++;
				ar->dirty[u >> 6] &= ~((uint64_t)1 << (u & 63));
				dirty_units--;
				n += GOSTACK__SPAN_SIZE;
			}
		}
		if (run_len != 0)
			gostack__os_decommit((void *)(ar->base + (run << GOSTACK__SPAN_SHIFT)),
			    run_len << GOSTACK__SPAN_SHIFT);
	}
	atomic_store_explicit(&released_bytes, atomic_load_explicit(&released_bytes, memory_order_relaxed) + n,
	    memory_order_relaxed);
	released_here += n;
	return n;
}

size_t
gostack__heap_scavenge(void)
{
	size_t n;

	pthread_mutex_lock(&heap_lock);
	n = scavenge_locked(UINT64_MAX);
	pthread_mutex_unlock(&heap_lock);
	return n;
}

size_t
gostack__heap_decay(uint64_t now, uint64_t *next)
{
	size_t n = 0;

	pthread_mutex_lock(&heap_lock);
	if (dirty_next <= now)
		n = scavenge_locked(now);
	*next = dirty_units != 0 ? dirty_next : UINT64_MAX;
	pthread_mutex_unlock(&heap_lock);
	return n;
}

uint64_t
gostack__heap_next_decay(void)
{
	uint64_t next;

	pthread_mutex_lock(&heap_lock);
	next = dirty_units != 0 ? dirty_next : UINT64_MAX;
	pthread_mutex_unlock(&heap_lock);
	return next;
}

size_t
gostack__heap_dirty(void)
{
	size_t n;

	pthread_mutex_lock(&heap_lock);
	n = dirty_units << GOSTACK__SPAN_SHIFT;
	pthread_mutex_unlock(&heap_lock);
	return n;
}

static struct gostack__arena *
arena_new(size_t bytes)
{
	size_t size = reserved < GOSTACK__ARENA_GRAN ? GOSTACK__ARENA_GRAN : reserved;
	_Atomic(struct gostack__span *) *t = atomic_load_explicit(&gostack__arena_table, memory_order_relaxed);

	if (t == NULL) {
		t = gostack__os_reserve(GOSTACK__ARENA_TABLE_LEN * sizeof *t, 4096);
		if (t == NULL)
			return NULL;
		/* Pairs with the acquire load in gostack__span_of_inline(). */
		atomic_store_explicit(&gostack__arena_table, t, memory_order_release);
	}
	if (size > ARENA_STEP_MAX)
		size = ARENA_STEP_MAX;
	size = gostack__round2(size);
	size_t need = GOSTACK__ARENA_GRAN;

	while (need < 2 * bytes)          /* the metadata must fit beside the span */
		need <<= 1;
	if (size < need)
		size = need;

	struct gostack__arena *ar;

	/* Address space may be limited (ulimit -v): settle for smaller steps,
	 * down to what this span needs, before giving up. */
	while ((ar = gostack__os_reserve(size, GOSTACK__ARENA_GRAN)) == NULL) {
		if (size <= need)
			return NULL;
		size >>= 1;
	}
	gostack__os_nohugepage(ar, size);
	ar->base = (uintptr_t)ar;
	ar->size = size;
	ar->nunits = size >> GOSTACK__SPAN_SHIFT;
	ar->max_horder = gostack__stacklog2(ar->nunits);
	ar->dirty = (uint64_t *)(void *)&ar->spans[ar->nunits];
	size_t meta = sizeof *ar + ar->nunits * sizeof(struct gostack__span) + (ar->nunits + 63) / 64 * 8;
	ar->meta_units = (meta + GOSTACK__SPAN_SIZE - 1) >> GOSTACK__SPAN_SHIFT;
	gostack__span_set_state(&ar->spans[0], GOSTACK__SPAN_META);
	for (size_t u = ar->meta_units; u < ar->nunits;) {
		unsigned h = (unsigned)__builtin_ctzll((unsigned long long)u);

		while (u + ((size_t)1 << h) > ar->nunits)
			h--;
		free_block(ar, u, h);   /* never touched: clean */
		u += (size_t)1 << h;
	}
	ar->next = arenas;
	arenas = ar;
	reserved += size;
	/* Pairs with the acquire load of t[i] in gostack__span_of_inline(): the
	 * span array is initialised before spanOf can reach it. */
	for (size_t i = 0; i < size >> GOSTACK__ARENA_GRAN_SHIFT; i++)
		atomic_store_explicit(&t[(ar->base >> GOSTACK__ARENA_GRAN_SHIFT) + i],
		    &ar->spans[i << (GOSTACK__ARENA_GRAN_SHIFT - GOSTACK__SPAN_SHIFT)], memory_order_release);
	return ar;
}

/* Put a guard below every stack of s; false (guards undone) on failure. */
static bool
install_guards(struct gostack__span *s)
{
	for (uint32_t i = 0; i < s->nelems; i++) {
		if (!gostack__os_guard((void *)(gostack__span_stack(s, i) - s->guard), s->guard)) {
			int e = errno;

			gostack__os_unguard((void *)s->base, s->npages << GOSTACK__PAGE_SHIFT);
			errno = e;
			return false;
		}
	}
	return true;
}

struct gostack__span *
gostack__heap_alloc(const struct gostack__geom *g, uint8_t state, size_t elemsize,
    struct gostack_allocator *owner)
{
	size_t bytes = g->bytes;
	unsigned h = gostack__stacklog2(bytes) - GOSTACK__SPAN_SHIFT;
	struct gostack__arena *ar;
	size_t u = SIZE_MAX;

	pthread_mutex_lock(&heap_lock);
	for (ar = arenas; ar != NULL; ar = ar->next) {
		if (ar->max_horder > h && (u = alloc_block(ar, h)) != SIZE_MAX)
			break;
	}
	if (ar == NULL) {
		ar = arena_new(bytes);
		if (ar == NULL || (u = alloc_block(ar, h)) == SIZE_MAX) {
			pthread_mutex_unlock(&heap_lock);
			errno = ENOMEM;
			return NULL;
		}
	}
	/* The struct of the unit holding the first stack (span.h). */
	struct gostack__span *s = &ar->spans[u + (g->lo_off >> GOSTACK__SPAN_SHIFT)];

	s->horder = (uint8_t)h;
	s->order = state == GOSTACK__SPAN_LARGE ? (uint8_t)gostack__stacklog2(elemsize >> GOSTACK__PAGE_SHIFT) : 0;
	atomic_store_explicit(&s->large_free, 0, memory_order_relaxed);
	s->base = ar->base + (u << GOSTACK__SPAN_SHIFT);
	s->npages = bytes >> GOSTACK__PAGE_SHIFT;
	s->stride = (uint32_t)g->stride;
	s->stride_mask = (uint32_t)g->stride - 1;
	s->guard = (uint32_t)g->guard;
	s->nelems = g->nelems;
	s->decay_at = 0;
	memset(&s->pool, 0, sizeof s->pool);
	atomic_store_explicit(&s->dbg_freed, 0, memory_order_relaxed);
	atomic_store_explicit(&s->lo_sampled, (uint32_t)g->lo_off, memory_order_relaxed);   /* no sampled bit */
	atomic_store_explicit(&s->elemsize, elemsize, memory_order_relaxed);
	atomic_store_explicit(&s->alloc, owner, memory_order_relaxed);
	pthread_mutex_unlock(&heap_lock);

	/* Outside the heap lock: the block is ours, nobody can see it yet. */
#ifdef GOSTACK_TEST_HOOKS
	if (atomic_load_explicit(&gostack__test_guard_free, memory_order_relaxed))
		gostack__os_unguard((void *)s->base, bytes);
#endif
	if (s->guard != 0 && !install_guards(s)) {
		pthread_mutex_lock(&heap_lock);
		gostack__span_set_state(s, GOSTACK__SPAN_NONE);
		free_block(ar, u, h);
		pthread_mutex_unlock(&heap_lock);
		errno = ENOMEM;
		return NULL;
	}
	/* Published last (Go: atomic state publication in allocManual).
	 * Relaxed: free()'s checks read state (or pool_of), alloc and elemsize relaxed, and
	 * need no pairing here: a stack reaches free() only after it was handed
	 * out, which happens-after this store through the pool hand-off (a pool
	 * lock or CAS, then the user's own transfer): span.h's invariant. */
	gostack__span_set_state(s, (uint8_t)state);
	return s;
}

void
gostack__heap_free(struct gostack__span *s, uint64_t decay_at)
{
	size_t bytes = s->npages << GOSTACK__PAGE_SHIFT;
	struct gostack__arena *ar = arena_of_span(s);
	size_t u = (s->base - ar->base) >> GOSTACK__SPAN_SHIFT;

	/* The span is still ours: remove its guards outside the heap lock. */
	if (s->guard != 0)
		gostack__os_unguard((void *)s->base, bytes);
#ifdef GOSTACK_TEST_HOOKS
	if (atomic_load_explicit(&gostack__test_guard_free, memory_order_relaxed))
		(void)gostack__os_guard((void *)s->base, bytes);
#endif
	pthread_mutex_lock(&heap_lock);
	gostack__span_set_state(s, GOSTACK__SPAN_NONE);
	dirty_set(ar, u, bytes >> GOSTACK__SPAN_SHIFT, decay_at);
	free_block(ar, u, s->horder);
	if ((dirty_units << GOSTACK__SPAN_SHIFT) > GOSTACK__HEAP_RETAIN)
		scavenge_locked(UINT64_MAX);
	pthread_mutex_unlock(&heap_lock);
}

struct gostack__arena *
gostack__heap_detach_empty(void)
{
	struct gostack__arena *dead = NULL, **pp;
	size_t dirty_before, dirty;
	_Atomic(struct gostack__span *) *t = atomic_load_explicit(&gostack__arena_table, memory_order_relaxed);

	pthread_mutex_lock(&heap_lock);
	dirty_before = dirty_units;
	for (pp = &arenas; *pp != NULL;) {
		struct gostack__arena *ar = *pp;

		if (ar->free_units != ar->nunits - ar->meta_units) {
			pp = &ar->next;
			continue;
		}
		*pp = ar->next;
		dirty_clear(ar, 0, ar->nunits);
		/* Release: pairs with the acquire load of t[i] in
		 * gostack__span_of_inline() (it finds no arena here from now on). */
		for (size_t i = 0; i < ar->size >> GOSTACK__ARENA_GRAN_SHIFT; i++)
			atomic_store_explicit(&t[(ar->base >> GOSTACK__ARENA_GRAN_SHIFT) + i], NULL,
			    memory_order_release);
		reserved -= ar->size;
		ar->next = dead;
		dead = ar;
	}
	/* The dirty units of detached arenas go back with their munmap. */
	dirty = (dirty_before - dirty_units) << GOSTACK__SPAN_SHIFT;
	atomic_store_explicit(&released_bytes,
	    atomic_load_explicit(&released_bytes, memory_order_relaxed) + dirty, memory_order_relaxed);
	released_here += dirty;
	pthread_mutex_unlock(&heap_lock);
	return dead;
}

void
gostack__heap_unmap(struct gostack__arena *dead)
{
	while (dead != NULL) {
		struct gostack__arena *ar = dead;

		dead = ar->next;
		gostack__os_unmap(ar, ar->size);
	}
}

uint64_t
gostack__heap_released_here(void)
{
	return released_here;
}

void
gostack__heap_totals(size_t *reserved_out, uint64_t *released_out)
{
	pthread_mutex_lock(&heap_lock);
	*reserved_out = reserved;
	pthread_mutex_unlock(&heap_lock);
	*released_out = atomic_load_explicit(&released_bytes, memory_order_relaxed);
}

void gostack__heap_fork_prepare(void) { pthread_mutex_lock(&heap_lock); }
void gostack__heap_fork_parent(void) { pthread_mutex_unlock(&heap_lock); }
