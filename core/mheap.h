/*
 * mheap.h: the arena layout and Go's spanOf, inline for free()'s checks.
 * The heap itself (allocManual / freeManual) is in mheap.c.
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
 *  - base and spans[] never change while the arena is in the table.
 */
struct gostack__arena {
	uintptr_t base;
	size_t size;
	size_t nunits, meta_units, free_units;
	unsigned max_horder;
	struct gostack__arena *next;
	struct gostack__span *free[GOSTACK__MAX_HORDER + 1];
	struct gostack__span spans[];
};

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
	_Atomic(struct gostack__span *) *t =
	    atomic_load_explicit(&gostack__arena_table, memory_order_acquire);
	size_t i = addr >> GOSTACK__ARENA_GRAN_SHIFT;
	struct gostack__span *chunk;

	if (gostack__unlikely(t == NULL || i >= GOSTACK__ARENA_TABLE_LEN))
		return NULL;
	/* Pairs with the release store in arena_new(): the span array is ready. */
	chunk = atomic_load_explicit(&t[i], memory_order_acquire);
	if (chunk == NULL)
		return NULL;
	return chunk + ((addr & (GOSTACK__ARENA_GRAN - 1)) >> GOSTACK__SPAN_SHIFT);
}

#endif /* GOSTACK_MHEAP_H */
