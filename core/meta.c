/*
 * meta.c: zeroed blocks for gostack's own bookkeeping (allocator structs,
 * per-thread caches). Power-of-two classes from 64 B to 64 KiB, carved from
 * 1 MiB chunks and recycled through per-class free lists; never malloc, so
 * an LD_PRELOADed malloc in the host carries none of gostack's state and a
 * fork child needs no malloc lock. Chunks are kept for the process lifetime
 * (the blocks are few and small).
 */
#include <string.h>

#include "internal.h"

#define META_MIN_SHIFT 6
#define META_MAX_SHIFT 16
#define META_CHUNK ((size_t)1 << 20)

struct meta_free { struct meta_free *next; };

static pthread_mutex_t meta_lock = PTHREAD_MUTEX_INITIALIZER;
static struct meta_free *meta_freelist[META_MAX_SHIFT + 1];   /* meta_lock */
static char *meta_bump, *meta_end;                            /* meta_lock */

static unsigned
meta_class(size_t size)
{
	unsigned c = META_MIN_SHIFT;

	while (((size_t)1 << c) < size)
		c++;
	return c;
}

void *
gostack__meta_alloc(size_t size)
{
	unsigned c = meta_class(size);
	size_t bytes = (size_t)1 << c;
	void *p = NULL;

	if (c > META_MAX_SHIFT) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&meta_lock);
	if (meta_freelist[c] != NULL) {
		struct meta_free *f = meta_freelist[c];

		meta_freelist[c] = f->next;
		p = f;
	} else {
		uintptr_t b = ((uintptr_t)meta_bump + bytes - 1) & ~(uintptr_t)(bytes - 1);

		if (meta_bump == NULL || b + bytes > (uintptr_t)meta_end) {
			char *chunk = gostack__os_reserve(META_CHUNK, 4096);

			if (chunk == NULL) {
				pthread_mutex_unlock(&meta_lock);
				return NULL;
			}
			meta_bump = chunk;
			meta_end = chunk + META_CHUNK;
			b = (uintptr_t)chunk;
		}
		p = (void *)b;
		meta_bump = (char *)(b + bytes);
	}
	pthread_mutex_unlock(&meta_lock);
	memset(p, 0, bytes);
	return p;
}

void
gostack__meta_free(void *p, size_t size)
{
	unsigned c = meta_class(size);
	struct meta_free *f = p;

	if (p == NULL)
		return;
	pthread_mutex_lock(&meta_lock);
	f->next = meta_freelist[c];
	meta_freelist[c] = f;
	pthread_mutex_unlock(&meta_lock);
}

void gostack__meta_fork_prepare(void) { pthread_mutex_lock(&meta_lock); }
void gostack__meta_fork_parent(void) { pthread_mutex_unlock(&meta_lock); }
