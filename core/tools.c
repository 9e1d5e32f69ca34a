/*
 * tools.c: the Valgrind side of tools.h (cmake -DGOSTACK_VALGRIND=ON).
 *
 * VALGRIND_STACK_REGISTER returns an id that VALGRIND_STACK_DEREGISTER needs
 * when the stack is freed. gostack keeps no metadata inside stacks (a free
 * small stack's top 16 bytes are its pool's), so the ids live here: an
 * open-addressing table lo -> id (linear probing, backward-shift deletion)
 * under one mutex, in mmap'd memory (gostack never calls malloc), doubled
 * when half full. It is only touched when running under Valgrind.
 */
#if defined(GOSTACK_VALGRIND)

#include <pthread.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>

#include "internal.h"
#include "span.h"
#include "tools.h"

struct vg_ent {
	uintptr_t lo;   /* 0: empty */
	unsigned id;
};

static pthread_mutex_t vg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t vg_once = PTHREAD_ONCE_INIT;
static struct vg_ent *vg_tab;
static unsigned vg_bits;          /* capacity 1 << vg_bits (0: no table) */
static size_t vg_count;

static void vg_lock_fn(void) { pthread_mutex_lock(&vg_lock); }
static void vg_unlock_fn(void) { pthread_mutex_unlock(&vg_lock); }
/* A child forked while another thread held the lock must not inherit it held. */
static void vg_init(void) { pthread_atfork(vg_lock_fn, vg_unlock_fn, vg_unlock_fn); }

static size_t
vg_home(uintptr_t lo, unsigned bits)
{
	return (size_t)(((uint64_t)(lo >> 11) * 0x9e3779b97f4a7c15ull) >> (64 - bits));
}

static void
vg_put(struct vg_ent *tab, unsigned bits, uintptr_t lo, unsigned id)
{
	size_t mask = ((size_t)1 << bits) - 1, i = vg_home(lo, bits);

	while (tab[i].lo != 0 && tab[i].lo != lo)
		i = (i + 1) & mask;
	tab[i].lo = lo;
	tab[i].id = id;
}

/* Room for one more entry: false if the table cannot grow (mmap failed). */
static bool
vg_reserve(void)
{
	unsigned bits = vg_bits == 0 ? 12 : vg_bits + 1;
	size_t bytes = sizeof(struct vg_ent) << bits;
	struct vg_ent *tab;

	if (vg_bits != 0 && (vg_count + 1) * 2 <= ((size_t)1 << vg_bits))
		return true;
	tab = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (tab == MAP_FAILED)
		return vg_bits != 0 && vg_count + 1 < ((size_t)1 << vg_bits);
	for (size_t i = 0; vg_bits != 0 && i < ((size_t)1 << vg_bits); i++)
		if (vg_tab[i].lo != 0)
			vg_put(tab, bits, vg_tab[i].lo, vg_tab[i].id);
	if (vg_bits != 0)
		munmap(vg_tab, sizeof(struct vg_ent) << vg_bits);
	vg_tab = tab;
	vg_bits = bits;
	return true;
}

/* Removes lo's entry; its id in *id. False if lo is not in the table. */
static bool
vg_take(uintptr_t lo, unsigned *id)
{
	size_t mask, i, j;

	if (vg_bits == 0)
		return false;
	mask = ((size_t)1 << vg_bits) - 1;
	for (i = vg_home(lo, vg_bits); vg_tab[i].lo != lo; i = (i + 1) & mask)
		if (vg_tab[i].lo == 0)
			return false;
	*id = vg_tab[i].id;
	vg_tab[i].lo = 0;
	vg_count--;
	/* Backward shift: move up every entry of the run that i now cuts off
	 * from its home slot. */
	for (j = i;;) {
		size_t k;

		j = (j + 1) & mask;
		if (vg_tab[j].lo == 0)
			break;
		k = vg_home(vg_tab[j].lo, vg_bits);
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;    /* still reachable from its home */
		vg_tab[i] = vg_tab[j];
		vg_tab[j].lo = 0;
		i = j;
	}
	return true;
}

void
gostack__vg_alloc(uintptr_t lo, size_t n)
{
	unsigned id, old;
	bool had;

	struct gostack__span *s = gostack__span_of(lo);
	gostack_allocator_t *a = s != NULL ? atomic_load_explicit(&s->alloc, memory_order_relaxed) : NULL;

	/* Undefined: what the user finds in it is garbage. In debug mode the
	 * 0xfc poison is content, which debug.c checks right after this hook. */
	if (a != NULL && a->debug)
		(void)VALGRIND_MAKE_MEM_DEFINED(lo, n);
	else
		(void)VALGRIND_MAKE_MEM_UNDEFINED(lo, n);
	id = VALGRIND_STACK_REGISTER(lo, lo + n - 1);   /* end: the highest byte */
	pthread_once(&vg_once, vg_init);
	pthread_mutex_lock(&vg_lock);
	had = vg_take(lo, &old);     /* none, unless a free was missed */
	if (vg_reserve()) {
		vg_put(vg_tab, vg_bits, lo, id);
		vg_count++;
	} else {
		VALGRIND_STACK_DEREGISTER(id);   /* cannot remember it: do not leave it */
	}
	pthread_mutex_unlock(&vg_lock);
	if (had)
		VALGRIND_STACK_DEREGISTER(old);
}

void
gostack__vg_free(uintptr_t lo, size_t n)
{
	unsigned id;
	bool had;

	pthread_once(&vg_once, vg_init);
	pthread_mutex_lock(&vg_lock);
	had = vg_take(lo, &id);
	pthread_mutex_unlock(&vg_lock);
	if (had)
		VALGRIND_STACK_DEREGISTER(id);
	/* The link stays usable even where memcheck took the coroutine's popped
	 * frames for dead stack (no-access): gostack writes it next. */
	(void)VALGRIND_MAKE_MEM_NOACCESS(lo, n - GOSTACK__TOOL_LINK(n));
	(void)VALGRIND_MAKE_MEM_DEFINED(lo + n - GOSTACK__TOOL_LINK(n), GOSTACK__TOOL_LINK(n));
}

void
gostack__vg_span_free(uintptr_t p, size_t n)
{
	/* Heap memory, carved again later (links written at stack tops). */
	(void)VALGRIND_MAKE_MEM_UNDEFINED(p, n);
}

#else
typedef int gostack__tools_unused;   /* ISO C: a translation unit is not empty */
#endif
