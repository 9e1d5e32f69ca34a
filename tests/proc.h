/*
 * tests/proc.h: what the kernel says about this process, for the tests, the
 * soak and the micro benchmarks (separate programs, one copy of the code):
 * a monotonic clock, /proc/self/maps lines, resident bytes.
 */
#ifndef GOSTACK_TESTS_PROC_H
#define GOSTACK_TESTS_PROC_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* CLOCK_MONOTONIC in seconds. */
static inline double
proc_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Lines in /proc/self/maps (one per mapping), or -1. */
static inline long
proc_maps_lines(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	long n = 0;
	int c;

	if (f == NULL)
		return -1;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/* Resident set size in bytes, or -1. */
static inline long
proc_rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long size = 0, rss = 0;

	if (f == NULL)
		return -1;
	if (fscanf(f, "%ld %ld", &size, &rss) != 2)
		rss = -1;
	fclose(f);
	return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

/* Threads of this process, and those of them named name (/proc/self/task/N/comm). */
static inline int
proc_threads(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		char path[300], comm[64] = "";
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		if (name == NULL) {
			n++;
			continue;
		}
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
		if ((f = fopen(path, "r")) != NULL) {
			if (fgets(comm, sizeof comm, f) != NULL)
				comm[strcspn(comm, "\n")] = '\0';
			fclose(f);
		}
		n += strcmp(comm, name) == 0;
	}
	closedir(d);
	return n;
}

#endif
