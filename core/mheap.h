/*
 * mheap.h: the page heap's interface (mheap.c), the arena layout and Go's
 * spanOf, inline for free()'s checks. Only core/span.c, core/allocator.c,
 * core/stats.c and the scavenger call the heap; the pools never do.
 */
#ifndef GOSTACK_MHEAP_H
#define GOSTACK_MHEAP_H

#include "internal.h"

#define GOSTACK__ARENA_GRAN_SHIFT 26                 /* 64 MiB: table granule, smallest arena */
#define GOSTACK__ARENA_GRAN       ((size_t)1 << GOSTACK__ARENA_GRAN_SHIFT)
#define GOSTACK__ARENA_TABLE_LEN  ((size_t)1 << (GOSTACK__HEAP_ADDR_BITS - GOSTACK__ARENA_GRAN_SHIFT))
#define GOSTACK__MAX_HORDER       20                 /* 2^20 units = 32 GiB */

/*
 * An arena: one reservation, a buddy heap of 32 KiB units.
 * Invariants (heap lock):
 *  - nunits = size >> 15; units [0, meta_units) are the header and span array
 *    (spans[0].state == META); every other unit is in exactly one block,
 *    either a span (head state POOL or LARGE) or free (head state FREE, on
 *    free[horder]); non-head units have state NONE.
 *  - free_units = units in free blocks; the arena holds no span iff
 *    free_units == nunits - meta_units.
 *  - base, spans[] and dirty never change while the arena is in the table.
 *  - dirty[] (after spans[], in the metadata units): bit u set iff unit u is
 *    in a free block and may hold committed pages (it was freed after its
 *    last scavenge); spans[u].decay_at is then when it goes back. Units that
 *    are in use or clean have the bit clear. The heap's dirty bytes are
 *    exactly 32 KiB per set bit over all arenas.
 */
struct gostack__arena {
	uintptr_t base;
	size_t size;
	size_t nunits, meta_units, free_units;
	unsigned max_horder;
	struct gostack__arena *next;
	uint64_t *dirty;
	struct gostack__spanhead free[GOSTACK__MAX_HORDER + 1];
	struct gostack__span spans[];
};

/* Go's allocManual: a span of g->bytes (a power of two >= 32 KiB) laid out
 * by g, in state `state` (SPAN_POOL or SPAN_LARGE) holding stacks of
 * elemsize bytes for owner (stored, never read by the heap), guards
 * installed. NULL with errno ENOMEM. */
GOSTACK__HIDDEN struct gostack__span *gostack__heap_alloc(const struct gostack__geom *g, uint8_t state,
    size_t elemsize, struct gostack_allocator *owner);
/* Go's freeManual: the span's block goes back to the heap, its units dirty
 * until decay_at (UINT64_MAX: until a scavenge; 0: the next pass). */
GOSTACK__HIDDEN void gostack__heap_free(struct gostack__span *s, uint64_t decay_at);
/* Every dirty unit back to the OS (madvise); returns the bytes. */
GOSTACK__HIDDEN size_t gostack__heap_scavenge(void);
/* Dirty units whose decay deadline is <= now back to the OS; *next: the
 * earliest deadline left (UINT64_MAX: none). Returns the bytes. */
GOSTACK__HIDDEN size_t gostack__heap_decay(uint64_t now, uint64_t *next);
/* The earliest decay deadline of a dirty unit (a lower bound), or
 * UINT64_MAX when no dirty unit will ever decay by itself. */
GOSTACK__HIDDEN uint64_t gostack__heap_next_decay(void);
/* Bytes of dirty free units (exact). */
GOSTACK__HIDDEN size_t gostack__heap_dirty(void);
/* Arenas that hold no span, taken out of the heap and the spanOf table
 * (their dirty units count as released: the unmap gives them back). */
GOSTACK__HIDDEN struct gostack__arena *gostack__heap_detach_empty(void);
/* Unmap detached arenas (once nobody can read their metadata). */
GOSTACK__HIDDEN void gostack__heap_unmap(struct gostack__arena *list);
/* Address space in arenas now; stack memory given back to the OS so far. */
GOSTACK__HIDDEN void gostack__heap_totals(size_t *reserved, uint64_t *released);
/* Stack memory the calling thread's heap calls gave back so far. */
GOSTACK__HIDDEN uint64_t gostack__heap_released_here(void);
GOSTACK__HIDDEN void gostack__heap_fork_prepare(void);
GOSTACK__HIDDEN void gostack__heap_fork_parent(void);

/* One entry per 64 MiB of the 48-bit address space (the table itself is
 * NULL until the first arena): for a chunk inside an arena, the span struct
 * of the chunk's first 32 KiB unit, so that spanOf needs no arena header. */
extern _Atomic(struct gostack__span *) *_Atomic gostack__arena_table GOSTACK__HIDDEN;

/* Go's spanOf: the span struct of the 32 KiB unit holding addr, or NULL when
 * addr is in no arena. Reads only the table and the arena's span array,
 * never the stack. Callers check the span's state. */
static inline struct gostack__span *
gostack__span_of_inline(uintptr_t addr)
{
	/* Pairs with the release store of the table in arena_new(). */
	_Atomic(struct gostack__span *) *t =
	    atomic_load_explicit(&gostack__arena_table, memory_order_acquire);
	size_t i = addr >> GOSTACK__ARENA_GRAN_SHIFT;
	struct gostack__span *chunk;

	if (gostack__unlikely(t == NULL || i >= GOSTACK__ARENA_TABLE_LEN))
		return NULL;
	/* Pairs with the release stores of t[i] in arena_new() (the span array
	 * is ready) and gostack__heap_detach_empty() (the arena is gone). */
	chunk = atomic_load_explicit(&t[i], memory_order_acquire);
	if (chunk == NULL)
		return NULL;
	return chunk + ((addr & (GOSTACK__ARENA_GRAN - 1)) >> GOSTACK__SPAN_SHIFT);
}

#endif /* GOSTACK_MHEAP_H */
