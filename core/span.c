/*
 * span.c: a span's passage between the heap and an allocator (Go's
 * allocManual / freeManual as the stack allocator calls them). The only two
 * functions that change an allocator's `mapped`; the pools call these, never
 * the heap.
 *
 * The heap knows no allocator: here the allocator's guard becomes the span's
 * geometry (gostack__geom_of) and its decay_ms the heap's decay deadline, and
 * the tools (ASan, Valgrind) hear that a span's stacks went back. The
 * scavenger is not kicked here (a pool lock may be held): span_free leaves a
 * note in the thread's TLS (idle memory to give back), and the engine's
 * slow paths kick it once they hold no lock (gostack__scavenger_poke).
 */
#include "mheap.h"
#include "tools.h"

struct gostack__span *
gostack__span_alloc(gostack_allocator_t *a, uint8_t state, size_t elemsize)
{
	struct gostack__geom g;
	struct gostack__span *s;

	gostack__geom_of(a, elemsize, &g);
	s = gostack__heap_alloc(&g, state, elemsize, a);
	if (s == NULL)
		return NULL;
	/* seq_cst: pairs with the scavenger's seq_cst reload of mapped after it
	 * published IDLE (scavenger.c, "Sleeping"): either it sees this span,
	 * or this thread's later kick sees IDLE. (Rare: once per span.) */
	atomic_fetch_add_explicit(&a->mapped, gostack__span_stack_bytes(s), memory_order_seq_cst);
	return s;
}

void
gostack__span_free(gostack_allocator_t *a, struct gostack__span *s, bool idle)
{
	size_t n = atomic_load_explicit(&s->elemsize, memory_order_relaxed);
	uint64_t decay_at = idle ? 0 : a->decay_ms < 0 ? UINT64_MAX : gostack__now_ms() + (uint64_t)a->decay_ms;

	atomic_fetch_sub_explicit(&a->mapped, gostack__span_stack_bytes(s), memory_order_relaxed);
	gostack__scavenger_note(a);   /* its pages stay committed until decay */
	for (uint32_t i = 0; i < s->nelems; i++)   /* the ranges its stacks were poisoned in */
		gostack__tool_span_free(gostack__span_stack(s, i), n);
	gostack__heap_free(s, decay_at);
}
