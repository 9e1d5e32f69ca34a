/*
 * mheap.c: Go's page heap for stacks (allocManual / freeManual / spanOf)
 * and its scavenger.
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
 * The arena's first units hold its header and one struct gostack__span per
 * unit (out-of-line metadata: nothing is ever stored inside a stack).
 *
 * spanOf: a flat table with one entry per 64 MiB of the 48-bit address space
 * (4 Mi entries, one 32 MiB lazily committed mapping) points at the span
 * struct of the chunk's first unit; the unit index within the chunk picks the
 * span. Two dependent loads, no lock, never a read of memory gostack does
 * not own.
 *
 * Giving memory back (Go: freeManual returns pages to the heap at once, the
 * scavenger returns them to the OS later). A span freed with
 * GOSTACK__RELEASE_DECOMMIT goes back to the heap at once, its pages still
 * committed ("dirty"); the heap keeps at most GOSTACK__HEAP_RETAIN bytes of
 * dirty free blocks process-wide and scavenges them all (madvise
 * MADV_DONTNEED) when a free passes that, and on every reclaim. So a span
 * that empties and refills in a loop costs no syscall and no page fault (on
 * a virtual machine a DONTNEED's TLB flush can cost 100 us), and the memory
 * is back when reclaim returns. A span freed with GOSTACK__RELEASE_UNMAP
 * (lock-free pools, after a grace period) is replaced at once by an
 * inaccessible PROT_NONE mapping, a "hole" that stays reserved and is mapped
 * back when the block is reused, so a stale access faults instead of reading
 * reused memory. Whole arenas are unmapped by gostack__heap_release_empty()
 * (from reclaim) once they hold no span.
 *
 * Locking: one heap lock (Go's mheap.lock), taken after any pool lock.
 */
#include <string.h>

#include "mheap.h"
#include "tools.h"

#define ARENA_STEP_MAX ((size_t)1 << 30)

static pthread_mutex_t heap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct gostack__arena *arenas;   /* heap lock */
static size_t reserved;                 /* heap lock: bytes in arenas */
static size_t dirty_bytes;              /* heap lock: bytes of free blocks flagged DIRTY */
static uint64_t dirty_next = UINT64_MAX;/* heap lock: <= the earliest decay_at of a DIRTY block */
_Atomic(struct gostack__span *) *_Atomic gostack__arena_table;

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

static void
free_insert(struct gostack__arena *ar, size_t u, unsigned h, uint8_t flags, uint64_t decay_at)
{
	struct gostack__span *s = &ar->spans[u];

	s->horder = (uint8_t)h;
	s->hflags = flags;
	s->decay_at = decay_at;
	if (flags & GOSTACK__BLOCK_DIRTY) {
		dirty_bytes += (size_t)1 << (h + GOSTACK__SPAN_SHIFT);
		if (decay_at < dirty_next)
			dirty_next = decay_at;
	}
	s->hprev = NULL;
	s->hnext = ar->free[h];
	if (s->hnext != NULL)
		s->hnext->hprev = s;
	ar->free[h] = s;
	atomic_store_explicit(&s->alloc, NULL, memory_order_relaxed);
	atomic_store_explicit(&s->state, GOSTACK__SPAN_FREE, memory_order_relaxed);
}

static void
free_remove(struct gostack__arena *ar, struct gostack__span *s)
{
	if (s->hprev != NULL)
		s->hprev->hnext = s->hnext;
	else
		ar->free[s->horder] = s->hnext;
	if (s->hnext != NULL)
		s->hnext->hprev = s->hprev;
	s->hnext = s->hprev = NULL;
	if (s->hflags & GOSTACK__BLOCK_DIRTY)
		dirty_bytes -= (size_t)1 << (s->horder + GOSTACK__SPAN_SHIFT);
	atomic_store_explicit(&s->state, GOSTACK__SPAN_NONE, memory_order_relaxed);
}

/* Free block (u, h): coalesce with free buddies, then list it. A merged
 * block carries both halves' flags (it may hold a hole, or dirty pages) and
 * the earlier decay deadline of its dirty halves. */
static void
free_block(struct gostack__arena *ar, size_t u, unsigned h, uint8_t flags, uint64_t decay_at)
{
	ar->free_units += (size_t)1 << h;
	while (h < ar->max_horder) {
		size_t b = u ^ ((size_t)1 << h);
		struct gostack__span *bs = &ar->spans[b];

		if (atomic_load_explicit(&bs->state, memory_order_relaxed) != GOSTACK__SPAN_FREE ||
		    bs->horder != h)
			break;
		free_remove(ar, bs);
		if ((bs->hflags & GOSTACK__BLOCK_DIRTY) && bs->decay_at < decay_at)
			decay_at = bs->decay_at;
		flags |= bs->hflags;
		u &= ~((size_t)1 << h);
		atomic_store_explicit(&ar->spans[u ^ ((size_t)1 << h)].state, GOSTACK__SPAN_NONE,
		    memory_order_relaxed);
		h++;
	}
	free_insert(ar, u, h, flags, decay_at);
}

/* A block of 2^h units, split from the smallest free block that fits; or
 * SIZE_MAX. *flags: the block's HOLE/DIRTY flags. */
static size_t
alloc_block(struct gostack__arena *ar, unsigned h, uint8_t *flags, uint64_t *decay_at)
{
	unsigned j = h;

	while (j <= ar->max_horder && ar->free[j] == NULL)
		j++;
	if (j > ar->max_horder)
		return SIZE_MAX;
	struct gostack__span *s = ar->free[j];
	size_t u = unit_of(ar, s);
	uint8_t fl = s->hflags;
	uint64_t at = s->decay_at;

	free_remove(ar, s);
	while (j > h) {
		j--;
		free_insert(ar, u + ((size_t)1 << j), j, fl, at);
	}
	ar->free_units -= (size_t)1 << h;
	*flags = fl;
	*decay_at = at;
	return u;
}

/* Go's scavenger: dirty free blocks whose deadline is <= until back to the
 * OS (UINT64_MAX: all of them); recomputes dirty_next. The blocks are free
 * and the heap lock is held, so nobody can be using them. Returns bytes. */
static size_t
scavenge_locked(uint64_t until)
{
	size_t n = 0;

	dirty_next = UINT64_MAX;
	for (struct gostack__arena *ar = arenas; ar != NULL && dirty_bytes != 0; ar = ar->next) {
		for (unsigned h = 0; h <= ar->max_horder; h++) {
			for (struct gostack__span *s = ar->free[h]; s != NULL; s = s->hnext) {
				if (!(s->hflags & GOSTACK__BLOCK_DIRTY))
					continue;
				if (s->decay_at > until) {
					if (s->decay_at < dirty_next)
						dirty_next = s->decay_at;
					continue;
				}
				gostack__os_decommit((void *)(ar->base + (unit_of(ar, s) << GOSTACK__SPAN_SHIFT)),
				    (size_t)1 << (h + GOSTACK__SPAN_SHIFT));
				s->hflags &= (uint8_t)~GOSTACK__BLOCK_DIRTY;
				dirty_bytes -= (size_t)1 << (h + GOSTACK__SPAN_SHIFT);
				n += (size_t)1 << (h + GOSTACK__SPAN_SHIFT);
			}
		}
	}
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
	*next = dirty_next;
	pthread_mutex_unlock(&heap_lock);
	return n;
}

size_t
gostack__heap_dirty(void)
{
	size_t n;

	pthread_mutex_lock(&heap_lock);
	n = dirty_bytes;
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
		atomic_store_explicit(&gostack__arena_table, t, memory_order_release);
	}
	if (size > ARENA_STEP_MAX)
		size = ARENA_STEP_MAX;
	size = gostack__round2(size);
	size_t need = GOSTACK__ARENA_GRAN;

	while (need < 2 * bytes)          /* the span array must fit beside the span */
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
	size_t meta = sizeof *ar + ar->nunits * sizeof(struct gostack__span);
	ar->meta_units = (meta + GOSTACK__SPAN_SIZE - 1) >> GOSTACK__SPAN_SHIFT;
	atomic_store_explicit(&ar->spans[0].state, GOSTACK__SPAN_META, memory_order_relaxed);
	for (size_t u = ar->meta_units; u < ar->nunits;) {
		unsigned h = (unsigned)__builtin_ctzll((unsigned long long)u);

		while (u + ((size_t)1 << h) > ar->nunits)
			h--;
		free_block(ar, u, h, 0, UINT64_MAX);
		u += (size_t)1 << h;
	}
	ar->next = arenas;
	arenas = ar;
	reserved += size;
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
gostack__span_alloc(gostack_allocator_t *a, uint8_t state, size_t elemsize)
{
	struct gostack__geom g;

	gostack__geom_of(a, elemsize, &g);
	size_t bytes = g.bytes;
	unsigned h = gostack__stacklog2(bytes) - GOSTACK__SPAN_SHIFT;
	struct gostack__arena *ar;
	size_t u = SIZE_MAX;
	uint8_t flags = 0;
	uint64_t decay_at = UINT64_MAX;

	pthread_mutex_lock(&heap_lock);
	for (ar = arenas; ar != NULL; ar = ar->next) {
		if (ar->max_horder > h && (u = alloc_block(ar, h, &flags, &decay_at)) != SIZE_MAX)
			break;
	}
	if (ar == NULL) {
		ar = arena_new(bytes);
		if (ar == NULL || (u = alloc_block(ar, h, &flags, &decay_at)) == SIZE_MAX) {
			pthread_mutex_unlock(&heap_lock);
			errno = ENOMEM;
			return NULL;
		}
	}
	/* The struct of the unit holding the first stack (span.h). */
	struct gostack__span *s = &ar->spans[u + (g.lo_off >> GOSTACK__SPAN_SHIFT)];

	s->horder = (uint8_t)h;
	s->hflags = 0;
	s->order = 0;
	s->base = ar->base + (u << GOSTACK__SPAN_SHIFT);
	s->npages = bytes >> GOSTACK__PAGE_SHIFT;
	s->stride = (uint32_t)g.stride;
	s->lo_off = (uint32_t)g.lo_off;
	s->guard = (uint32_t)a->guard;
	s->nelems = g.nelems;
	s->allocCount = 0;
	s->next = s->prev = NULL;
	s->list = NULL;
	s->manualFreeList = NULL;
	memset(s->backend, 0, sizeof s->backend);
	atomic_store_explicit(&s->dbg_freed, 0, memory_order_relaxed);
	atomic_store_explicit(&s->elemsize, elemsize, memory_order_relaxed);
	atomic_store_explicit(&s->alloc, a, memory_order_relaxed);
	pthread_mutex_unlock(&heap_lock);

	/* Outside the heap lock: the block is ours, nobody can see it yet. */
	if (((flags & GOSTACK__BLOCK_HOLE) && !gostack__os_refill((void *)s->base, bytes)) ||
	    (s->guard != 0 && !install_guards(s))) {
		pthread_mutex_lock(&heap_lock);
		free_block(ar, u, h, flags, decay_at);
		pthread_mutex_unlock(&heap_lock);
		errno = ENOMEM;
		return NULL;
	}
	/* Published last (Go: atomic state publication in allocManual): free()'s
	 * checks accept the span's stacks only from here on. */
	atomic_store_explicit(&s->state, state, memory_order_release);
	atomic_fetch_add_explicit(&a->mapped, gostack__span_stack_bytes(s), memory_order_relaxed);
	if (a->decay_ms >= 0)
		gostack__scavenger_kick();   /* memory to watch from now on */
	return s;
}

void
gostack__span_free(gostack_allocator_t *a, struct gostack__span *s, enum gostack__release how)
{
	size_t bytes = s->npages << GOSTACK__PAGE_SHIFT;
	struct gostack__arena *ar = arena_of_span(s);
	uint8_t flags = GOSTACK__BLOCK_DIRTY;
	/* Dirty pages go back once idle for the allocator's decay time (an idle
	 * pooled span already was: at the scavenger's next pass). */
	int decay = a != NULL ? a->decay_ms : GOSTACK__DECAY_DEFAULT_MS;
	uint64_t decay_at = how == GOSTACK__RELEASE_IDLE ? 0 :
	    decay < 0 ? UINT64_MAX : gostack__now_ms() + (uint64_t)decay;

	if (a != NULL)
		atomic_fetch_sub_explicit(&a->mapped, gostack__span_stack_bytes(s), memory_order_relaxed);
	for (uint32_t i = 0; i < s->nelems; i++)   /* the ranges its stacks were poisoned in */
		gostack__tool_span_free(gostack__span_stack(s, i), atomic_load_explicit(&s->elemsize, memory_order_relaxed));
	/* The span is still ours: punch the hole (which also drops the guards)
	 * or remove the guards outside the heap lock. */
	if (how == GOSTACK__RELEASE_UNMAP && gostack__os_punch((void *)s->base, bytes))
		flags = GOSTACK__BLOCK_HOLE;
	else if (s->guard != 0)
		gostack__os_unguard((void *)s->base, bytes);
	pthread_mutex_lock(&heap_lock);
	atomic_store_explicit(&s->state, GOSTACK__SPAN_NONE, memory_order_relaxed);
	free_block(ar, (s->base - ar->base) >> GOSTACK__SPAN_SHIFT, s->horder, flags, decay_at);
	if (dirty_bytes > GOSTACK__HEAP_RETAIN)
		scavenge_locked(UINT64_MAX);
	pthread_mutex_unlock(&heap_lock);
}

size_t
gostack__heap_release_empty(void)
{
	struct gostack__arena *dead = NULL, **pp;
	_Atomic(struct gostack__span *) *t = atomic_load_explicit(&gostack__arena_table, memory_order_relaxed);
	size_t bytes = 0;

	pthread_mutex_lock(&heap_lock);
	for (pp = &arenas; *pp != NULL;) {
		struct gostack__arena *ar = *pp;

		if (ar->free_units != ar->nunits - ar->meta_units) {
			pp = &ar->next;
			continue;
		}
		*pp = ar->next;
		for (unsigned h = 0; h <= ar->max_horder; h++)
			for (struct gostack__span *f = ar->free[h]; f != NULL; f = f->hnext)
				if (f->hflags & GOSTACK__BLOCK_DIRTY)
					dirty_bytes -= (size_t)1 << (h + GOSTACK__SPAN_SHIFT);
		for (size_t i = 0; i < ar->size >> GOSTACK__ARENA_GRAN_SHIFT; i++)
			atomic_store_explicit(&t[(ar->base >> GOSTACK__ARENA_GRAN_SHIFT) + i], NULL,
			    memory_order_release);
		reserved -= ar->size;
		ar->next = dead;
		dead = ar;
	}
	pthread_mutex_unlock(&heap_lock);
	while (dead != NULL) {
		struct gostack__arena *ar = dead;

		dead = ar->next;
		bytes += ar->size;
		gostack__os_unmap(ar, ar->size);
	}
	return bytes;
}

void gostack__heap_fork_prepare(void) { pthread_mutex_lock(&heap_lock); }
void gostack__heap_fork_parent(void) { pthread_mutex_unlock(&heap_lock); }
