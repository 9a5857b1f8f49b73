/*
 * Benchmark of the compact number set (common/ccq_numset.[ch]) and of one
 * full gate decision against it. Method and results: tests/bench/README.md.
 *
 *   bench_numset [-H] [-q queries] [-b batch] [-d mixed|dense|both] [N ...]
 *
 * -H puts the image in transparent huge pages (madvise), as a Kamailio shm
 * pool can be; the default is ordinary 4 KiB pages.
 *
 * For each N (default 1000000 10000000) and each distribution it builds a set
 * of N random plausible E.164 numbers, then times lookups of members ("hit")
 * and of non-members ("miss") in random order:
 *   - batch:  the lookups of a batch are independent (as calls from many
 *             processes are), the batch is timed with clock_gettime and
 *             divided by its size; median and p99 over the batches;
 *   - chain:  each lookup's query index depends on the previous result, so
 *             lookups cannot overlap: this is the latency of one lookup.
 * "dram" is the floor of the machine: one dependent random read in a buffer
 * as large as the image (pointer chase), in ns.
 * Distributions: "mixed" = numbers of SG, MY, US, GB, IN, ID, AU (7 lengths
 * 10..13 digits); "dense" = one national DNC (Singapore mobiles, 65 8/9 +
 * 7 digits: 20M possible numbers, so 10M is half of them).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "ccq_numset.h"
#include "ccq_gate.h"

#define NUMLEN 16

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static int use_hugepages; /* -H: image in transparent huge pages */

/* The image's memory: plain heap, or 2 MiB-aligned mmap with MADV_HUGEPAGE. */
static void *image_alloc(size_t sz)
{
	void *p;

	sz = (sz + 7) & ~(size_t)7;
	if (!use_hugepages)
		return aligned_alloc(CCQ_NUMSET_ALIGN, sz);
	sz = (sz + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
	p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, sz, MADV_HUGEPAGE);
	return p;
}

static void image_free(void *p, size_t sz)
{
	if (!use_hugepages) {
		free(p);
		return;
	}
	sz = (sz + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
	munmap(p, sz);
}

static uint64_t rnd(void)
{
	/* splitmix64 */
	uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void digits(char *p, unsigned n)
{
	while (n--)
		*p++ = (char)('0' + rnd() % 10);
}

/* A plausible E.164 number (digits, no '+') into out[NUMLEN]. */
static void plausible(char *out, int dense)
{
	unsigned r = (unsigned)(rnd() % 100);

	memset(out, 0, NUMLEN);
	if (dense || r < 40) {             /* SG mobile: 65 [89] xxxxxxx */
		memcpy(out, "65", 2);
		out[2] = (rnd() & 1) ? '8' : '9';
		digits(out + 3, 7);
	} else if (r < 55) {               /* MY mobile: 60 1x xxxxxxx(x) */
		memcpy(out, "601", 3);
		digits(out + 3, 8 + (unsigned)(rnd() & 1));
	} else if (r < 70) {               /* NANP: 1 NXX NXX XXXX */
		out[0] = '1';
		out[1] = (char)('2' + rnd() % 8);
		digits(out + 2, 2);
		out[4] = (char)('2' + rnd() % 8);
		digits(out + 5, 6);
	} else if (r < 80) {               /* GB mobile: 44 7xxx xxxxxx */
		memcpy(out, "447", 3);
		digits(out + 3, 9);
	} else if (r < 90) {               /* IN mobile: 91 [6-9]xxxxxxxxx */
		memcpy(out, "91", 2);
		out[2] = (char)('6' + rnd() % 4);
		digits(out + 3, 9);
	} else if (r < 96) {               /* ID mobile: 62 8xx xxxx xxxx(x) */
		memcpy(out, "628", 3);
		digits(out + 3, 9 + (unsigned)(rnd() & 1));
	} else {                           /* AU mobile: 61 4xx xxx xxx */
		memcpy(out, "614", 3);
		digits(out + 3, 8);
	}
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void shuffle(char (*q)[NUMLEN], size_t n)
{
	size_t i;

	for (i = n; i > 1; i--) {
		size_t j = (size_t)(rnd() % i);
		char t[NUMLEN];

		memcpy(t, q[i - 1], NUMLEN);
		memcpy(q[i - 1], q[j], NUMLEN);
		memcpy(q[j], t, NUMLEN);
	}
}

struct stats {
	double med, p99;
	size_t found;
};

static volatile size_t sink;

/* Independent lookups, timed per batch. */
static struct stats run_batches(const void *img, char (*q)[NUMLEN], size_t nq,
		size_t batch)
{
	size_t nb = nq / batch, i, j, found = 0;
	double *t = malloc(nb * sizeof(double));
	struct stats s;

	for (i = 0; i < nb; i++) {
		double t0 = now_s();

		for (j = 0; j < batch; j++)
			found += (size_t)ccq_numset_contains(img, q[i * batch + j]);
		t[i] = (now_s() - t0) / (double)batch * 1e9;
	}
	qsort(t, nb, sizeof(double), cmp_double);
	s.med = t[nb / 2];
	s.p99 = t[(size_t)((double)nb * 0.99)];
	s.found = found;
	sink += found;
	free(t);
	return s;
}

/*
 * Dependent lookups: the next query's address needs this lookup's result
 * (r ^ expect is always 0, but the CPU cannot know that before r is there).
 */
static struct stats run_chain(const void *img, char (*q)[NUMLEN], size_t nq,
		size_t batch, int expect)
{
	size_t nb = nq / batch, i, j, found = 0, idx = 0;
	double *t = malloc(nb * sizeof(double));
	struct stats s;

	for (i = 0; i < nb; i++) {
		double t0 = now_s();

		for (j = 0; j < batch; j++) {
			int r = ccq_numset_contains(img, q[idx]);

			found += (size_t)r;
			idx = idx + 1 + (size_t)(r ^ expect); /* q is shuffled */
		}
		t[i] = (now_s() - t0) / (double)batch * 1e9;
	}
	qsort(t, nb, sizeof(double), cmp_double);
	s.med = t[nb / 2];
	s.p99 = t[(size_t)((double)nb * 0.99)];
	s.found = found;
	sink += found;
	free(t);
	return s;
}

/*
 * Whole gate decisions (4 lists, DNC = the big set), independent batches;
 * counts the DNC blocks.
 */
static struct stats run_gate(const void *dnc, const void *small, char (*q)[NUMLEN],
		size_t nq, size_t batch)
{
	size_t nb = nq / batch, i, j, blocked = 0;
	double *t = malloc(nb * sizeof(double));
	struct ccq_gate_input in = {
		.org_country = "SG",
		.country_whitelist = NULL, /* see README: the country is still looked up */
		.company_blacklist = small,
		.company_whitelist = small,
		.personal_whitelist = small,
		.dnc = dnc,
		.pin_policy = CCQ_PIN_POLICY_INTERNATIONAL,
		.pin = CCQ_PIN_VALID,
	};
	struct ccq_gate_result res;
	struct stats s;

	for (i = 0; i < nb; i++) {
		double t0 = now_s();

		for (j = 0; j < batch; j++) {
			in.number = q[i * batch + j];
			ccq_gate_eval(&in, &res);
			blocked += res.rule == CCQ_RULE_DNC;
		}
		t[i] = (now_s() - t0) / (double)batch * 1e9;
	}
	qsort(t, nb, sizeof(double), cmp_double);
	s.med = t[nb / 2];
	s.p99 = t[(size_t)((double)nb * 0.99)];
	s.found = blocked;
	sink += blocked;
	free(t);
	return s;
}

/*
 * The machine's floor: ns per dependent random read in a buffer as large as
 * the image (pointer chase over a random cycle of its cache lines). A lookup
 * that misses the caches cannot beat one of these.
 */
static double chase_ns(size_t bytes)
{
	size_t n = bytes / 64, i, p, steps = 1000000;
	size_t *perm;
	uint64_t *a;
	double t0, t;

	if (n < 2)
		return 0;
	a = aligned_alloc(64, n * 64);
	perm = malloc(n * sizeof(size_t));
	if (!a || !perm) {
		free(a);
		free(perm);
		return 0;
	}
	for (i = 0; i < n; i++)
		perm[i] = i;
	for (i = n - 1; i > 0; i--) {
		size_t j = (size_t)(rnd() % (i + 1)), t2 = perm[i];

		perm[i] = perm[j];
		perm[j] = t2;
	}
	for (i = 0; i < n; i++)
		a[perm[i] * 8] = perm[(i + 1) % n] * 8;
	p = perm[0] * 8;
	t0 = now_s();
	for (i = 0; i < steps; i++)
		p = a[p];
	t = (now_s() - t0) / (double)steps * 1e9;
	sink += p;
	free(a);
	free(perm);
	return t;
}

static long max_rss_mb(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss / 1024;
}

static int bench(size_t n, int dense, size_t nq, size_t batch, const void *small)
{
	ccq_numset_builder *b = ccq_numset_builder_new();
	char (*hits)[NUMLEN] = malloc(nq * NUMLEN);
	char (*miss)[NUMLEN] = malloc(nq * NUMLEN);
	char num[NUMLEN];
	size_t i, sz, nh = 0, nm = 0, stride;
	double t0, t_add, t_sort, t_fin, t_chk;
	void *img;
	struct stats hb, mb, hc, mc, gh, gm;

	if (!b || !hits || !miss)
		return -1;
	stride = n / nq ? n / nq : 1;
	t0 = now_s();
	if (ccq_numset_builder_reserve(b, n) < 0)
		return -1;
	for (i = 0; i < n; i++) {
		plausible(num, dense);
		if (ccq_numset_builder_add(b, num) < 0)
			return -1;
		if (i % stride == 0 && nh < nq)
			memcpy(hits[nh++], num, NUMLEN);
	}
	t_add = now_s() - t0;
	t0 = now_s();
	sz = ccq_numset_builder_size(b);
	t_sort = now_s() - t0;
	img = image_alloc(sz);
	if (!img)
		return -1;
	t0 = now_s();
	if (ccq_numset_builder_finish(b, img, sz) < 0)
		return -1;
	t_fin = now_s() - t0;
	ccq_numset_builder_free(b);
	t0 = now_s();
	if (ccq_numset_check(img, sz) != 0) {
		fprintf(stderr, "image check failed\n");
		return -1;
	}
	t_chk = now_s() - t0;

	while (nh < nq) /* fewer members than queries: repeat */
		memcpy(hits[nh], hits[nh % (n ? n : 1)], NUMLEN), nh++;
	while (nm < nq) {
		plausible(num, dense);
		if (!ccq_numset_contains(img, num))
			memcpy(miss[nm++], num, NUMLEN);
	}
	shuffle(hits, nh);
	shuffle(miss, nm);

	/* warm-up pass, then the measured ones */
	run_batches(img, hits, nq, batch);
	hb = run_batches(img, hits, nq, batch);
	mb = run_batches(img, miss, nq, batch);
	hc = run_chain(img, hits, nq, batch, 1);
	mc = run_chain(img, miss, nq, batch, 0);
	gh = run_gate(img, small, hits, nq, batch);
	gm = run_gate(img, small, miss, nq, batch);
	if (hb.found != nq || mb.found != 0 || gh.found != nq || gm.found != 0) {
		fprintf(stderr, "wrong answers: hits %zu/%zu misses %zu gate %zu/%zu\n",
				hb.found, nq, mb.found, gh.found, gm.found);
		return -1;
	}

	printf("%-5s %9zu %9zu %6.2f %6.2f %6.2f %5.0f %8.1f %5.2f | %5.0f %5.0f %5.0f %5.0f | %5.0f %5.0f | %5.0f %5.0f | %5.0f | %5ld\n",
			dense ? "dense" : "mixed", n, ccq_numset_count(img),
			t_add, t_sort, t_fin, t_chk * 1e3, (double)sz / 1048576.0,
			(double)sz / (double)ccq_numset_count(img),
			hb.med, hb.p99, mb.med, mb.p99, hc.med, mc.med, gh.med, gm.med,
			chase_ns(sz), max_rss_mb());
	fflush(stdout);
	image_free(img, sz);
	free(hits);
	free(miss);
	return 0;
}

int main(int argc, char **argv)
{
	size_t nq = 1000000, batch = 1000;
	size_t sizes[16];
	int nsizes = 0, opt, dist = 2; /* 0 mixed, 1 dense, 2 both */
	ccq_numset_builder *sb;
	void *small;
	size_t ssz;
	int i;

	while ((opt = getopt(argc, argv, "q:b:d:H")) != -1) {
		switch (opt) {
		case 'q':
			nq = strtoull(optarg, NULL, 10);
			break;
		case 'b':
			batch = strtoull(optarg, NULL, 10);
			break;
		case 'H':
			use_hugepages = 1;
			break;
		case 'd':
			dist = strcmp(optarg, "mixed") == 0 ? 0 : strcmp(optarg, "dense") == 0 ? 1 : 2;
			break;
		default:
			fprintf(stderr, "usage: %s [-H] [-q queries] [-b batch] [-d mixed|dense|both] [N ...]\n",
					argv[0]);
			return 2;
		}
	}
	for (i = optind; i < argc && nsizes < 16; i++)
		sizes[nsizes++] = strtoull(argv[i], NULL, 10);
	if (nsizes == 0) {
		sizes[nsizes++] = 1000000;
		sizes[nsizes++] = 10000000;
	}
	if (batch == 0 || nq < batch * 100) {
		fprintf(stderr, "need at least 100 batches (queries >= 100 * batch)\n");
		return 2;
	}

	/* the other lists of a gate decision: small, company-sized */
	sb = ccq_numset_builder_new();
	for (i = 0; i < 1000; i++) {
		char num[16];

		snprintf(num, sizeof(num), "6560%06d", i);
		ccq_numset_builder_add(sb, num);
	}
	ssz = ccq_numset_builder_size(sb);
	small = aligned_alloc(8, (ssz + 7) & ~(size_t)7);
	ccq_numset_builder_finish(sb, small, ssz);
	ccq_numset_builder_free(sb);

	printf("queries %zu per kind, batches of %zu; times in ns per lookup; build in s; check in ms\n",
			nq, batch);
	{
		double l1 = 0, l5 = 0, l15 = 0;
		FILE *f = fopen("/proc/loadavg", "r");

		if (f) {
			if (fscanf(f, "%lf %lf %lf", &l1, &l5, &l15) != 3)
				l1 = l5 = l15 = 0;
			fclose(f);
		}
		printf("load average before the run: %.2f %.2f %.2f\n", l1, l5, l15);
	}
	printf("%-5s %9s %9s %6s %6s %6s %5s %8s %5s | %11s %11s | %11s | %11s | %5s | %5s\n",
			"dist", "N", "distinct", "add", "sort", "write", "check", "MiB", "B/num",
			"batch hit", "batch miss", "chain h/m", "gate h/m", "dram", "RSS");
	printf("%-5s %9s %9s %6s %6s %6s %5s %8s %5s | %5s %5s %5s %5s | %5s %5s | %5s %5s | %5s | %5s\n",
			"", "", "", "", "", "", "", "", "", "med", "p99", "med", "p99", "med",
			"med", "med", "med", "chase", "MiB");
	for (i = 0; i < nsizes; i++) {
		if (dist != 1 && bench(sizes[i], 0, nq, batch, small) < 0)
			return 1;
		if (dist != 0 && bench(sizes[i], 1, nq, batch, small) < 0)
			return 1;
	}
	free(small);
	return 0;
}
