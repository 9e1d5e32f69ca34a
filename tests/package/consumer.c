/* Uses an installed gostack: find_package(gostack CONFIG) or pkg-config. */
#include <gostack.h>
#include <stdio.h>
#include <string.h>

int
main(void)
{
	gostack_t s = gostack_alloc(8192);
	gostack_stats_t st;

	if (s.lo == 0 || s.hi - s.lo != 8192)
		return 1;
	memset((void *)s.lo, 1, s.hi - s.lo);
	gostack_free(s);
	gostack_allocator_stats(gostack_default_allocator(), &st);
	printf("consumer: allocs %llu frees %llu\n", (unsigned long long)st.allocs, (unsigned long long)st.frees);
	return st.allocs == 1 && st.frees == 1 ? 0 : 1;
}
