// Measurement helpers for the gostack benchmark harness: sampled latency
// histograms, a reusable barrier, and process memory probes (/proc/self).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#define GSB_LIKELY(x) __builtin_expect(!!(x), 1)
#define GSB_UNLIKELY(x) __builtin_expect(!!(x), 0)

namespace gsb {

[[noreturn]] inline void die(const char* what) {
	std::fprintf(stderr, "gostack_bench: fatal: %s\n", what);
	std::fflush(stderr);
	std::_Exit(3);
}

inline uint64_t now_ns() {
	return (uint64_t)std::chrono::duration_cast<std::chrono::nanoseconds>(
		       std::chrono::steady_clock::now().time_since_epoch())
		.count();
}

// Smallest difference between two back-to-back clock reads: what one timed
// sample costs on top of the operation. Subtracted from every sample (and
// recorded in the JSON context) so that fast operations are not swamped by it.
inline uint64_t calibrate_clock_overhead() {
	uint64_t best = UINT64_MAX;
	for (int i = 0; i < 20000; i++) {
		uint64_t a = now_ns(), b = now_ns();
		if (b - a < best) best = b - a;
	}
	return best;
}

// Log-linear histogram of nanoseconds: 16 sub-buckets per power of two
// (relative resolution 1/16), exact below 16 ns.
struct Hist {
	static constexpr int kSubBits = 4;
	static constexpr int kSub = 1 << kSubBits;
	static constexpr int kBuckets = 64 * kSub;
	uint64_t b[kBuckets];
	uint64_t n;

	Hist() { clear(); }
	void clear() { std::memset(b, 0, sizeof b); n = 0; }
	static int index(uint64_t v) {
		if (v < (uint64_t)kSub) return (int)v;
		int e = 63 - __builtin_clzll(v);          // >= kSubBits
		int sub = (int)((v >> (e - kSubBits)) & (kSub - 1));
		return (e - kSubBits + 1) * kSub + sub;
	}
	// Midpoint of bucket idx.
	static double value(int idx) {
		if (idx < kSub) return idx;
		int e = idx / kSub + kSubBits - 1, sub = idx % kSub;
		double lo = (double)((uint64_t)(kSub + sub) << (e - kSubBits));
		double w = (double)(1ull << (e - kSubBits));
		return lo + w / 2;
	}
	void add(uint64_t v) { b[index(v)]++; n++; }
	void merge(const Hist& o) {
		for (int i = 0; i < kBuckets; i++) b[i] += o.b[i];
		n += o.n;
	}
	double quantile(double q) const {
		if (n == 0) return 0;
		uint64_t rank = (uint64_t)(q * (double)(n - 1)) + 1, acc = 0;
		for (int i = 0; i < kBuckets; i++) {
			acc += b[i];
			if (acc >= rank) return value(i);
		}
		return value(kBuckets - 1);
	}
};

extern uint64_t g_clock_overhead_ns;

// Per-thread sampler: one operation in 64 on average is timed. The gap
// between samples is drawn at random (1..127) so that sampling cannot alias
// with a workload's own period (e.g. sizes cycling 2/4/8/16 KiB).
struct Sampler {
	uint32_t alloc_left, free_left;
	uint64_t rng;
	Hist alloc_h, free_h;

	explicit Sampler(uint64_t seed) : rng(seed * 0x9E3779B97F4A7C15ull | 1) {
		alloc_left = gap();
		free_left = gap();
	}
	uint32_t gap() {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		return 1 + (uint32_t)(rng % 127);
	}
	static uint64_t net(uint64_t t0, uint64_t t1) {
		uint64_t d = t1 - t0;
		return d > g_clock_overhead_ns ? d - g_clock_overhead_ns : 0;
	}
};

// Reusable barrier (generation counted); used a handful of times per run.
class Barrier {
	std::mutex m_;
	std::condition_variable cv_;
	int n_ = 1, count_ = 0;
	uint64_t gen_ = 0;

public:
	void reset(int n) {
		std::lock_guard<std::mutex> l(m_);
		n_ = n;
		count_ = 0;
	}
	void wait() {
		std::unique_lock<std::mutex> l(m_);
		uint64_t g = gen_;
		if (++count_ == n_) {
			count_ = 0;
			gen_++;
			cv_.notify_all();
			return;
		}
		cv_.wait(l, [&] { return gen_ != g; });
	}
};

// ---- process memory ----

inline size_t read_file(const char* path, char* buf, size_t cap) {
	int fd = ::open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return 0;
	size_t n = 0;
	for (;;) {
		ssize_t r = ::read(fd, buf + n, cap - 1 - n);
		if (r <= 0) break;
		n += (size_t)r;
		if (n == cap - 1) break;
	}
	::close(fd);
	buf[n] = 0;
	return n;
}

// Resident set size now (VmRSS), bytes.
inline long long rss_bytes() {
	char buf[256];
	if (!read_file("/proc/self/statm", buf, sizeof buf)) return -1;
	unsigned long long size = 0, res = 0;
	if (std::sscanf(buf, "%llu %llu", &size, &res) != 2) return -1;
	return (long long)res * sysconf(_SC_PAGESIZE);
}

// Peak resident set size (VmHWM) since the last reset, bytes.
inline long long hwm_bytes() {
	static char buf[8192];
	if (!read_file("/proc/self/status", buf, sizeof buf)) return -1;
	const char* p = std::strstr(buf, "VmHWM:");
	if (!p) return -1;
	return std::atoll(p + 6) * 1024;
}

// Resets VmHWM to the current RSS (Linux >= 4.0). False if not permitted.
inline bool reset_hwm() {
	int fd = ::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	if (fd < 0) return false;
	bool ok = ::write(fd, "5", 1) == 1;
	::close(fd);
	return ok;
}

// Number of memory mappings (lines of /proc/self/maps).
inline long long count_maps() {
	int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0) return -1;
	static char buf[1 << 16];
	long long lines = 0;
	for (;;) {
		ssize_t r = ::read(fd, buf, sizeof buf);
		if (r <= 0) break;
		for (ssize_t i = 0; i < r; i++) lines += buf[i] == '\n';
	}
	::close(fd);
	return lines;
}

}  // namespace gsb
