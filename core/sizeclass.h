/*
 * Go's stack size arithmetic (runtime/stack.go, malloc.go), linux/amd64.
 *
 *   fixedStack      2048          order 0; size(order) = fixedStack << order
 *   _NumStackOrders 4             2, 4, 8, 16 KiB
 *   _StackCacheSize 32768         per-thread cap per order, and one pool span
 *   _PageShift      13            8 KiB pages
 *   small           n < 32768     (n < fixedStack<<_NumStackOrders && n < _StackCacheSize)
 *   stackLarge      35 lists      heapAddrBits(48) - pageShift(13), index log2(npages)
 */
#ifndef GOSTACK_SIZECLASS_H
#define GOSTACK_SIZECLASS_H

#include <stddef.h>
#include <stdint.h>

#include "gostack.h"

#define GOSTACK__FIXED_STACK   GOSTACK_MIN_SIZE
#define GOSTACK__PAGE_SHIFT    13
#define GOSTACK__PAGE_SIZE     ((size_t)1 << GOSTACK__PAGE_SHIFT)
#define GOSTACK__SPAN_SHIFT    15                      /* a pool span: 32 KiB, 4 pages */
#define GOSTACK__SPAN_SIZE     ((size_t)1 << GOSTACK__SPAN_SHIFT)
#define GOSTACK__SMALL_LIMIT   ((size_t)GOSTACK__FIXED_STACK << GOSTACK_NUM_ORDERS)   /* 32 KiB */
#define GOSTACK__HEAP_ADDR_BITS 48
#define GOSTACK__LARGE_LISTS   (GOSTACK__HEAP_ADDR_BITS - GOSTACK__PAGE_SHIFT)        /* 35 */

_Static_assert(GOSTACK_CACHE_SIZE % GOSTACK__PAGE_SIZE == 0, "stackinit: cache size not a multiple of the page size");
_Static_assert(GOSTACK__SPAN_SIZE == GOSTACK_CACHE_SIZE, "a pool span is one stack cache");

/* Go's round2 for sizes >= 1: the next power of two. Caller keeps n <= GOSTACK_MAX_SIZE. */
static inline size_t
gostack__round2(size_t n)
{
	if (n <= GOSTACK__FIXED_STACK)
		return GOSTACK__FIXED_STACK;
	return (size_t)1 << (64 - __builtin_clzll((unsigned long long)(n - 1)));
}

/* true iff a rounded size is small (served from caches and stackpool). */
static inline int
gostack__is_small(size_t n)
{
	return n < GOSTACK__SMALL_LIMIT && n < GOSTACK_CACHE_SIZE;
}

/* Order of a rounded small size: Go's loop `for n2 > fixedStack { order++; n2 >>= 1 }`. */
static inline int
gostack__order(size_t n)
{
	return 63 - __builtin_clzll((unsigned long long)n) - 11;
}

static inline size_t
gostack__order_size(int order)
{
	return (size_t)GOSTACK__FIXED_STACK << order;
}

/* Go's stacklog2: floor(log2(n)) for n >= 1. */
static inline unsigned
gostack__stacklog2(size_t n)
{
	return 63u - (unsigned)__builtin_clzll((unsigned long long)n);
}

/* Stack classes, one numbering for every per-class table (the depth
 * profile's histograms, the per-CPU tier's bins): the orders 0 ..
 * GOSTACK_NUM_ORDERS - 1, then large stacks by log2 of their size, class
 * GOSTACK_NUM_ORDERS being 32 KiB. For a rounded size. */
static inline int
gostack__class_of(size_t n)
{
	if (gostack__is_small(n))
		return gostack__order(n);
	return GOSTACK_NUM_ORDERS + (int)(63 - __builtin_clzll((unsigned long long)n)) - GOSTACK__SPAN_SHIFT;
}

static inline size_t
gostack__class_size(int c)
{
	return c < GOSTACK_NUM_ORDERS ? gostack__order_size(c) : GOSTACK__SPAN_SIZE << (c - GOSTACK_NUM_ORDERS);
}

static inline int
gostack__is_pow2(size_t n)
{
	return n != 0 && (n & (n - 1)) == 0;
}

#endif /* GOSTACK_SIZECLASS_H */
