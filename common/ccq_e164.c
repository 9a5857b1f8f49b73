/*
 * ccq E.164 normalisation; see ccq_e164.h and doc/compliance.md.
 *
 * The calling-code table below is written from the ITU-T E.164 assignment
 * list (Recommendation E.164 Annex / ITU Operational Bulletin). Trunk prefixes
 * are filled in only where the national numbering plan is well known; for the
 * rest (trunk == NULL) a national-format number is refused rather than guessed,
 * because a wrongly normalised number would silently miss the DNC list.
 */
#include "ccq_e164.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct cc_entry {
	uint16_t cc;       /* calling code, 1..999 */
	char iso[4];       /* primary region, "001" for non-geographic */
	const char *trunk; /* national trunk prefix: "0", "1", "8", "06";
	                    * NONE, KEEP0, or UNK: not known (national format
	                    * refused) */
	const char *idd;   /* extra international prefix besides "00", or NULL */
	uint8_t nsn_min;   /* national significant number length bounds; */
	uint8_t nsn_max;   /* 0 = only the generic E.164 bounds */
};

#define T0 "0"
#define NONE ""     /* no trunk prefix, and no number starts with 0 */
#define KEEP0 "-"   /* no trunk prefix, a leading 0 is part of the number */
#define UNK NULL

/* Sorted by calling code (bsearch). Prefix-free, as E.164 guarantees. */
static const struct cc_entry cc_table[] = {
	{ 1, "US", "1", "011", 10, 10 },      /* NANP, see nanp_table */
	{ 7, "RU", "8", "810", 10, 10 },       /* KZ: 76x, 77x */
	{ 20, "EG", T0, NULL, 8, 10 },
	{ 27, "ZA", T0, NULL, 9, 9 },
	{ 30, "GR", NONE, NULL, 10, 10 },
	{ 31, "NL", T0, NULL, 9, 11 },
	{ 32, "BE", T0, NULL, 8, 9 },
	{ 33, "FR", T0, NULL, 9, 9 },
	{ 34, "ES", NONE, NULL, 9, 9 },
	{ 36, "HU", "06", NULL, 8, 9 },
	{ 39, "IT", KEEP0, NULL, 6, 11 },     /* the leading 0 of landlines stays */
	{ 40, "RO", T0, NULL, 9, 9 },
	{ 41, "CH", T0, NULL, 9, 9 },
	{ 43, "AT", T0, NULL, 4, 13 },
	{ 44, "GB", T0, NULL, 9, 10 },
	{ 45, "DK", NONE, NULL, 8, 8 },
	{ 46, "SE", T0, NULL, 7, 10 },
	{ 47, "NO", NONE, NULL, 5, 8 },
	{ 48, "PL", NONE, NULL, 9, 9 },
	{ 49, "DE", T0, NULL, 6, 13 },
	{ 51, "PE", T0, NULL, 8, 9 },
	{ 52, "MX", NONE, NULL, 10, 10 },
	{ 53, "CU", T0, NULL, 6, 8 },
	{ 54, "AR", T0, NULL, 10, 11 },
	{ 55, "BR", T0, NULL, 10, 11 },
	{ 56, "CL", UNK, NULL, 0, 0 },
	{ 57, "CO", UNK, NULL, 0, 0 },
	{ 58, "VE", T0, NULL, 10, 10 },
	{ 60, "MY", T0, NULL, 8, 10 },
	{ 61, "AU", T0, "0011", 9, 10 },      /* CC: 89162, CX: 89164 */
	{ 62, "ID", T0, NULL, 7, 12 },
	{ 63, "PH", T0, NULL, 8, 10 },
	{ 64, "NZ", T0, NULL, 8, 10 },
	{ 65, "SG", NONE, NULL, 8, 11 },      /* 11 for 1800 numbers */
	{ 66, "TH", T0, NULL, 8, 10 },
	{ 81, "JP", T0, "010", 9, 10 },
	{ 82, "KR", T0, NULL, 8, 10 },
	{ 84, "VN", T0, NULL, 9, 10 },
	{ 86, "CN", T0, NULL, 9, 11 },
	{ 90, "TR", T0, NULL, 10, 10 },
	{ 91, "IN", T0, NULL, 10, 10 },
	{ 92, "PK", T0, NULL, 9, 10 },
	{ 93, "AF", T0, NULL, 9, 9 },
	{ 94, "LK", T0, NULL, 9, 9 },
	{ 95, "MM", T0, NULL, 7, 10 },
	{ 98, "IR", T0, NULL, 10, 10 },
	{ 211, "SS", UNK, NULL, 0, 0 },
	{ 212, "MA", T0, NULL, 9, 9 },        /* EH shares it */
	{ 213, "DZ", T0, NULL, 8, 9 },
	{ 216, "TN", NONE, NULL, 8, 8 },
	{ 218, "LY", UNK, NULL, 0, 0 },
	{ 220, "GM", UNK, NULL, 0, 0 },
	{ 221, "SN", UNK, NULL, 0, 0 },
	{ 222, "MR", UNK, NULL, 0, 0 },
	{ 223, "ML", UNK, NULL, 0, 0 },
	{ 224, "GN", UNK, NULL, 0, 0 },
	{ 225, "CI", UNK, NULL, 0, 0 },
	{ 226, "BF", UNK, NULL, 0, 0 },
	{ 227, "NE", UNK, NULL, 0, 0 },
	{ 228, "TG", UNK, NULL, 0, 0 },
	{ 229, "BJ", UNK, NULL, 0, 0 },
	{ 230, "MU", UNK, NULL, 0, 0 },
	{ 231, "LR", UNK, NULL, 0, 0 },
	{ 232, "SL", UNK, NULL, 0, 0 },
	{ 233, "GH", T0, NULL, 9, 9 },
	{ 234, "NG", T0, NULL, 8, 10 },
	{ 235, "TD", UNK, NULL, 0, 0 },
	{ 236, "CF", UNK, NULL, 0, 0 },
	{ 237, "CM", UNK, NULL, 0, 0 },
	{ 238, "CV", UNK, NULL, 0, 0 },
	{ 239, "ST", UNK, NULL, 0, 0 },
	{ 240, "GQ", UNK, NULL, 0, 0 },
	{ 241, "GA", UNK, NULL, 0, 0 },
	{ 242, "CG", UNK, NULL, 0, 0 },
	{ 243, "CD", UNK, NULL, 0, 0 },
	{ 244, "AO", UNK, NULL, 0, 0 },
	{ 245, "GW", UNK, NULL, 0, 0 },
	{ 246, "IO", UNK, NULL, 0, 0 },
	{ 247, "AC", UNK, NULL, 0, 0 },
	{ 248, "SC", UNK, NULL, 0, 0 },
	{ 249, "SD", UNK, NULL, 0, 0 },
	{ 250, "RW", UNK, NULL, 0, 0 },
	{ 251, "ET", T0, NULL, 9, 9 },
	{ 252, "SO", UNK, NULL, 0, 0 },
	{ 253, "DJ", UNK, NULL, 0, 0 },
	{ 254, "KE", T0, NULL, 9, 9 },
	{ 255, "TZ", T0, NULL, 9, 9 },
	{ 256, "UG", T0, NULL, 9, 9 },
	{ 257, "BI", UNK, NULL, 0, 0 },
	{ 258, "MZ", UNK, NULL, 0, 0 },
	{ 260, "ZM", T0, NULL, 9, 9 },
	{ 261, "MG", UNK, NULL, 0, 0 },
	{ 262, "RE", UNK, NULL, 0, 0 },       /* YT: 262269, 262639 */
	{ 263, "ZW", T0, NULL, 0, 0 },
	{ 264, "NA", UNK, NULL, 0, 0 },
	{ 265, "MW", UNK, NULL, 0, 0 },
	{ 266, "LS", UNK, NULL, 0, 0 },
	{ 267, "BW", UNK, NULL, 0, 0 },
	{ 268, "SZ", UNK, NULL, 0, 0 },
	{ 269, "KM", UNK, NULL, 0, 0 },
	{ 290, "SH", UNK, NULL, 0, 0 },
	{ 291, "ER", UNK, NULL, 0, 0 },
	{ 297, "AW", UNK, NULL, 0, 0 },
	{ 298, "FO", NONE, NULL, 6, 6 },
	{ 299, "GL", NONE, NULL, 6, 6 },
	{ 350, "GI", NONE, NULL, 8, 8 },
	{ 351, "PT", NONE, NULL, 9, 9 },
	{ 352, "LU", NONE, NULL, 0, 0 },
	{ 353, "IE", T0, NULL, 7, 9 },
	{ 354, "IS", NONE, NULL, 7, 9 },
	{ 355, "AL", T0, NULL, 0, 0 },
	{ 356, "MT", NONE, NULL, 8, 8 },
	{ 357, "CY", NONE, NULL, 8, 8 },
	{ 358, "FI", T0, NULL, 0, 0 },        /* AX: 35818 */
	{ 359, "BG", T0, NULL, 0, 0 },
	{ 370, "LT", UNK, NULL, 0, 0 },
	{ 371, "LV", NONE, NULL, 8, 8 },
	{ 372, "EE", NONE, NULL, 7, 8 },
	{ 373, "MD", T0, NULL, 8, 8 },
	{ 374, "AM", T0, NULL, 8, 8 },
	{ 375, "BY", "8", "810", 9, 9 },
	{ 376, "AD", NONE, NULL, 6, 6 },
	{ 377, "MC", NONE, NULL, 8, 9 },
	{ 378, "SM", KEEP0, NULL, 0, 0 },     /* 0549 ... */
	{ 379, "VA", NONE, NULL, 0, 0 },      /* assigned, in practice +39 06698 */
	{ 380, "UA", T0, NULL, 9, 9 },
	{ 381, "RS", T0, NULL, 0, 0 },
	{ 382, "ME", T0, NULL, 0, 0 },
	{ 383, "XK", T0, NULL, 0, 0 },
	{ 385, "HR", T0, NULL, 0, 0 },
	{ 386, "SI", T0, NULL, 8, 8 },
	{ 387, "BA", T0, NULL, 0, 0 },
	{ 389, "MK", T0, NULL, 8, 8 },
	{ 420, "CZ", NONE, NULL, 9, 9 },
	{ 421, "SK", T0, NULL, 0, 0 },
	{ 423, "LI", NONE, NULL, 0, 0 },
	{ 500, "FK", UNK, NULL, 0, 0 },
	{ 501, "BZ", UNK, NULL, 0, 0 },
	{ 502, "GT", NONE, NULL, 8, 8 },
	{ 503, "SV", NONE, NULL, 8, 8 },
	{ 504, "HN", NONE, NULL, 8, 8 },
	{ 505, "NI", UNK, NULL, 0, 0 },
	{ 506, "CR", NONE, NULL, 8, 8 },
	{ 507, "PA", NONE, NULL, 7, 8 },
	{ 508, "PM", UNK, NULL, 0, 0 },
	{ 509, "HT", UNK, NULL, 0, 0 },
	{ 590, "GP", UNK, NULL, 0, 0 },       /* BL, MF share it */
	{ 591, "BO", UNK, NULL, 0, 0 },
	{ 592, "GY", UNK, NULL, 0, 0 },
	{ 593, "EC", T0, NULL, 0, 0 },
	{ 594, "GF", UNK, NULL, 0, 0 },
	{ 595, "PY", T0, NULL, 0, 0 },
	{ 596, "MQ", UNK, NULL, 0, 0 },
	{ 597, "SR", UNK, NULL, 0, 0 },
	{ 598, "UY", T0, NULL, 0, 0 },
	{ 599, "CW", UNK, NULL, 0, 0 },       /* BQ: 5993, 5994, 5997 */
	{ 670, "TL", UNK, NULL, 0, 0 },
	{ 672, "NF", UNK, NULL, 0, 0 },
	{ 673, "BN", NONE, NULL, 7, 7 },
	{ 674, "NR", UNK, NULL, 0, 0 },
	{ 675, "PG", UNK, NULL, 0, 0 },
	{ 676, "TO", UNK, NULL, 0, 0 },
	{ 677, "SB", UNK, NULL, 0, 0 },
	{ 678, "VU", UNK, NULL, 0, 0 },
	{ 679, "FJ", UNK, NULL, 0, 0 },
	{ 680, "PW", UNK, NULL, 0, 0 },
	{ 681, "WF", UNK, NULL, 0, 0 },
	{ 682, "CK", UNK, NULL, 0, 0 },
	{ 683, "NU", UNK, NULL, 0, 0 },
	{ 685, "WS", UNK, NULL, 0, 0 },
	{ 686, "KI", UNK, NULL, 0, 0 },
	{ 687, "NC", UNK, NULL, 0, 0 },
	{ 688, "TV", UNK, NULL, 0, 0 },
	{ 689, "PF", UNK, NULL, 0, 0 },
	{ 690, "TK", UNK, NULL, 0, 0 },
	{ 691, "FM", UNK, NULL, 0, 0 },
	{ 692, "MH", UNK, NULL, 0, 0 },
	{ 800, "001", UNK, NULL, 8, 8 },      /* international freephone */
	{ 808, "001", UNK, NULL, 8, 8 },      /* shared cost */
	{ 850, "KP", UNK, NULL, 0, 0 },
	{ 852, "HK", NONE, NULL, 8, 9 },
	{ 853, "MO", NONE, NULL, 8, 8 },
	{ 855, "KH", T0, NULL, 8, 9 },
	{ 856, "LA", T0, NULL, 8, 10 },
	{ 870, "001", UNK, NULL, 0, 0 },      /* Inmarsat */
	{ 880, "BD", T0, NULL, 8, 10 },
	{ 881, "001", UNK, NULL, 0, 0 },      /* global mobile satellite */
	{ 882, "001", UNK, NULL, 0, 0 },      /* international networks */
	{ 883, "001", UNK, NULL, 0, 0 },
	{ 886, "TW", T0, NULL, 8, 9 },
	{ 888, "001", UNK, NULL, 0, 0 },      /* OCHA */
	{ 960, "MV", NONE, NULL, 7, 7 },
	{ 961, "LB", T0, NULL, 7, 8 },
	{ 962, "JO", T0, NULL, 8, 9 },
	{ 963, "SY", T0, NULL, 0, 0 },
	{ 964, "IQ", T0, NULL, 0, 0 },
	{ 965, "KW", NONE, NULL, 8, 8 },
	{ 966, "SA", T0, NULL, 8, 9 },
	{ 967, "YE", T0, NULL, 0, 0 },
	{ 968, "OM", NONE, NULL, 8, 8 },
	{ 970, "PS", T0, NULL, 0, 0 },
	{ 971, "AE", T0, NULL, 8, 9 },
	{ 972, "IL", T0, NULL, 8, 9 },
	{ 973, "BH", NONE, NULL, 8, 8 },
	{ 974, "QA", NONE, NULL, 7, 8 },
	{ 975, "BT", UNK, NULL, 0, 0 },
	{ 976, "MN", UNK, NULL, 0, 0 },
	{ 977, "NP", T0, NULL, 0, 0 },
	{ 979, "001", UNK, NULL, 9, 9 },      /* international premium rate */
	{ 992, "TJ", UNK, NULL, 0, 0 },
	{ 993, "TM", "8", "810", 8, 8 },
	{ 994, "AZ", T0, NULL, 9, 9 },
	{ 995, "GE", T0, NULL, 9, 9 },
	{ 996, "KG", T0, NULL, 9, 9 },
	{ 998, "UZ", UNK, NULL, 9, 9 },
};

#define CC_COUNT (sizeof(cc_table) / sizeof(cc_table[0]))

/*
 * NANP area codes that are not the United States. Sorted by area code.
 * Canada's list covers every area code in service and the announced overlays;
 * the rest are the Caribbean and Pacific members.
 */
struct nanp_entry {
	uint16_t area;
	char iso[3];
};

static const struct nanp_entry nanp_table[] = {
	{ 204, "CA" }, { 226, "CA" }, { 236, "CA" }, { 242, "BS" },
	{ 246, "BB" }, { 249, "CA" }, { 250, "CA" }, { 263, "CA" },
	{ 264, "AI" }, { 268, "AG" }, { 284, "VG" }, { 289, "CA" },
	{ 306, "CA" }, { 340, "VI" }, { 343, "CA" }, { 345, "KY" },
	{ 354, "CA" }, { 365, "CA" }, { 367, "CA" }, { 368, "CA" },
	{ 382, "CA" }, { 403, "CA" }, { 416, "CA" }, { 418, "CA" },
	{ 428, "CA" }, { 431, "CA" }, { 437, "CA" }, { 438, "CA" },
	{ 441, "BM" }, { 450, "CA" }, { 468, "CA" }, { 473, "GD" },
	{ 474, "CA" }, { 506, "CA" }, { 514, "CA" }, { 519, "CA" },
	{ 548, "CA" }, { 579, "CA" }, { 581, "CA" }, { 584, "CA" },
	{ 587, "CA" }, { 604, "CA" }, { 613, "CA" }, { 639, "CA" },
	{ 647, "CA" }, { 649, "TC" }, { 658, "JM" }, { 664, "MS" },
	{ 670, "MP" }, { 671, "GU" }, { 672, "CA" }, { 683, "CA" },
	{ 684, "AS" }, { 705, "CA" }, { 709, "CA" }, { 721, "SX" },
	{ 742, "CA" }, { 753, "CA" }, { 758, "LC" }, { 767, "DM" },
	{ 778, "CA" }, { 780, "CA" }, { 782, "CA" }, { 784, "VC" },
	{ 787, "PR" }, { 807, "CA" }, { 809, "DO" }, { 819, "CA" },
	{ 825, "CA" }, { 829, "DO" }, { 849, "DO" }, { 867, "CA" },
	{ 868, "TT" }, { 869, "KN" }, { 873, "CA" }, { 876, "JM" },
	{ 879, "CA" }, { 902, "CA" }, { 905, "CA" }, { 939, "PR" },
};

#define NANP_COUNT (sizeof(nanp_table) / sizeof(nanp_table[0]))

/* Regions inside a shared calling code other than +1, by leading digits. */
struct sub_entry {
	uint16_t cc;        /* the shared calling code */
	uint8_t len;        /* strlen(prefix) */
	const char *prefix; /* E.164 digits, calling code included */
	char iso[3];
};

#define SUB(cc, prefix, iso) { cc, sizeof(prefix) - 1, prefix, iso }

static const struct sub_entry sub_table[] = {
	SUB(39, "3906698", "VA"),
	SUB(358, "35818", "AX"),
	SUB(44, "441481", "GG"),
	SUB(44, "441534", "JE"),
	SUB(44, "441624", "IM"),
	SUB(44, "447624", "IM"),
	SUB(262, "262269", "YT"),
	SUB(262, "262639", "YT"),
	SUB(599, "5993", "BQ"),
	SUB(599, "5994", "BQ"),
	SUB(599, "5997", "BQ"),
	SUB(61, "6189162", "CC"),
	SUB(61, "6189164", "CX"),
	SUB(7, "76", "KZ"),
	SUB(7, "77", "KZ"),
};

#define SUB_COUNT (sizeof(sub_table) / sizeof(sub_table[0]))

static const char *const err_text[CCQ_E164_E_MAX_] = {
	[CCQ_E164_OK] = "ok",
	[CCQ_E164_E_EMPTY] = "empty number",
	[CCQ_E164_E_LETTERS] = "contains letters",
	[CCQ_E164_E_BAD_CHAR] = "contains a character that is neither a digit nor a separator",
	[CCQ_E164_E_PLUS] = "'+' is only allowed once, at the start",
	[CCQ_E164_E_ONLY_PLUS] = "no digits after the international prefix",
	[CCQ_E164_E_TOO_SHORT] = "too short",
	[CCQ_E164_E_TOO_LONG] = "too long (E.164 allows at most 15 digits)",
	[CCQ_E164_E_UNKNOWN_CC] = "unknown country calling code",
	[CCQ_E164_E_NO_COUNTRY] = "national number but no known default country; dial +<country code>",
	[CCQ_E164_E_NATIONAL] = "national format not supported for the default country; dial +<country code>",
	[CCQ_E164_E_BAD_NUMBER] = "not a valid number for its country",
};

const char *ccq_e164_strerror(int err)
{
	if (err < 0)
		err = -err;
	if (err >= CCQ_E164_E_MAX_)
		return "unknown error";
	return err_text[err];
}

static const struct cc_entry *cc_find(int code)
{
	size_t lo = 0, hi = CC_COUNT;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cc_table[mid].cc == code)
			return &cc_table[mid];
		if (cc_table[mid].cc < code)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The entry whose calling code starts the digit string, NULL if none. */
static const struct cc_entry *cc_lookup(const char *d, size_t n)
{
	int code = 0;
	size_t i;

	if (n == 0 || d[0] == '0')
		return NULL;
	for (i = 0; i < 3 && i < n; i++) {
		const struct cc_entry *e;

		if (d[i] < '0' || d[i] > '9')
			return NULL;
		code = code * 10 + (d[i] - '0');
		e = cc_find(code);
		if (e)
			return e;
	}
	return NULL;
}

static int ascii_upper(int c)
{
	return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;
}

static int iso_eq(const char *a, const char *b)
{
	while (*a && *b) {
		if (ascii_upper((unsigned char)*a) != ascii_upper((unsigned char)*b))
			return 0;
		a++;
		b++;
	}
	return *a == *b;
}

/* Numbering plan of a region (the +1 entry for "CA", the +7 one for "KZ"). */
static const struct cc_entry *region_plan(const char *iso)
{
	size_t i;

	if (!iso || !*iso)
		return NULL;
	for (i = 0; i < CC_COUNT; i++)
		if (iso_eq(iso, cc_table[i].iso) && cc_table[i].iso[0] != '0')
			return &cc_table[i];
	for (i = 0; i < NANP_COUNT; i++)
		if (iso_eq(iso, nanp_table[i].iso))
			return &cc_table[0];
	for (i = 0; i < SUB_COUNT; i++)
		if (iso_eq(iso, sub_table[i].iso))
			return cc_lookup(sub_table[i].prefix, sub_table[i].len);
	return NULL;
}

int ccq_e164_region_known(const char *iso)
{
	return region_plan(iso) != NULL;
}

int ccq_e164_region_code(const char *iso)
{
	const struct cc_entry *e = region_plan(iso);

	return e ? e->cc : 0;
}

static size_t cc_digits(unsigned cc)
{
	return cc >= 100 ? 3 : cc >= 10 ? 2 : 1;
}

static int digits_only(const char *d, size_t *n)
{
	size_t i;

	for (i = 0; d[i]; i++) {
		if (d[i] < '0' || d[i] > '9' || i >= CCQ_E164_MAX_DIGITS)
			return 0;
	}
	*n = i;
	return 1;
}

int ccq_e164_country_code(const char *digits)
{
	const struct cc_entry *e;
	size_t n;

	if (!digits || !digits_only(digits, &n))
		return 0;
	e = cc_lookup(digits, n);
	return e ? e->cc : 0;
}

static int cmp_area(const void *key, const void *elem)
{
	int k = *(const int *)key;
	const struct nanp_entry *e = elem;

	return k - (int)e->area;
}

const char *ccq_e164_country(const char *digits)
{
	const struct cc_entry *e;
	size_t n, i;

	if (!digits || !digits_only(digits, &n))
		return NULL;
	e = cc_lookup(digits, n);
	if (!e)
		return NULL;
	if (e->cc == 1) {
		if (n >= 4) {
			const struct nanp_entry *a;
			int area = (digits[1] - '0') * 100 + (digits[2] - '0') * 10
				+ (digits[3] - '0');

			a = bsearch(&area, nanp_table, NANP_COUNT, sizeof(nanp_table[0]),
					cmp_area);
			if (a)
				return a->iso;
		}
		return e->iso;
	}
	for (i = 0; i < SUB_COUNT; i++) {
		const struct sub_entry *se = &sub_table[i];

		if (se->cc == e->cc && se->len <= n && memcmp(digits, se->prefix, se->len) == 0)
			return se->iso;
	}
	return e->iso;
}

static int starts_with(const char *d, size_t n, const char *p)
{
	size_t pl = strlen(p);

	return pl > 0 && pl <= n && memcmp(d, p, pl) == 0;
}

/* Bounds of the national part and NANP shape; cc and nsn are digits. */
static int check_number(const struct cc_entry *e, const char *nsn, size_t nsn_len)
{
	size_t total = cc_digits(e->cc) + nsn_len;

	if (total > CCQ_E164_MAX_DIGITS || (e->nsn_max && nsn_len > e->nsn_max))
		return -CCQ_E164_E_TOO_LONG;
	if (total < CCQ_E164_MIN_DIGITS || (e->nsn_min && nsn_len < e->nsn_min))
		return -CCQ_E164_E_TOO_SHORT;
	/* with no trunk prefix, or with trunk prefix 0 (already stripped), a
	 * national number never starts with 0 */
	if (e->trunk && (e->trunk[0] == '\0' || strcmp(e->trunk, "0") == 0) && nsn[0] == '0')
		return -CCQ_E164_E_BAD_NUMBER;
	/* NANP: NXX-NXX-XXXX, N = 2..9 */
	if (e->cc == 1 && (nsn[0] < '2' || nsn[3] < '2'))
		return -CCQ_E164_E_BAD_NUMBER;
	return 0;
}

/* Longest raw digit string worth looking at: "0011" + 15 digits, with room. */
#define RAW_MAX 24

int ccq_e164_normalize(const char *in, size_t len, const char *default_country,
		char out[CCQ_E164_BUFSZ], const char **why)
{
	char raw[RAW_MAX];
	size_t nraw = 0, i, nsn_len;
	int plus = 0, seen = 0, rc, too_long = 0;
	const struct cc_entry *e, *home = NULL;
	const char *d, *nsn;
	size_t nd;

	out[0] = '\0';
	if (!in)
		len = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c >= '0' && c <= '9') {
			if (nraw < RAW_MAX)
				raw[nraw++] = (char)c;
			else
				too_long = 1;
			seen = 1;
		} else if (c == '+') {
			if (plus || seen) {
				rc = -CCQ_E164_E_PLUS;
				goto fail;
			}
			plus = 1;
		} else if (c == ' ' || c == '\t' || c == '-' || c == '.' || c == '('
				|| c == ')' || c == '/') {
			continue;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
			rc = -CCQ_E164_E_LETTERS;
			goto fail;
		} else {
			rc = -CCQ_E164_E_BAD_CHAR;
			goto fail;
		}
	}
	if (too_long) {
		rc = -CCQ_E164_E_TOO_LONG;
		goto fail;
	}
	if (nraw == 0) {
		rc = plus ? -CCQ_E164_E_ONLY_PLUS : -CCQ_E164_E_EMPTY;
		goto fail;
	}

	d = raw;
	nd = nraw;
	if (default_country && *default_country)
		home = region_plan(default_country);

	if (!plus) {
		/* international prefix: the home plan's own (011, 0011, 010), then 00 */
		if (home && home->idd && starts_with(d, nd, home->idd)) {
			d += strlen(home->idd);
			nd -= strlen(home->idd);
			plus = 1;
		} else if (starts_with(d, nd, "00")) {
			d += 2;
			nd -= 2;
			plus = 1;
		}
		if (plus && nd == 0) {
			rc = -CCQ_E164_E_ONLY_PLUS;
			goto fail;
		}
	}

	if (plus) {
		e = cc_lookup(d, nd);
		if (!e) {
			rc = nd < 3 ? -CCQ_E164_E_TOO_SHORT : -CCQ_E164_E_UNKNOWN_CC;
			goto fail;
		}
		nsn = d + cc_digits(e->cc);
		nsn_len = nd - cc_digits(e->cc);
		/* "+44 (0)20 ...": a trunk 0 written after the country code */
		if (e->trunk && strcmp(e->trunk, "0") == 0 && nsn_len > 0 && nsn[0] == '0') {
			nsn++;
			nsn_len--;
		}
	} else {
		if (!home) {
			rc = -CCQ_E164_E_NO_COUNTRY;
			goto fail;
		}
		e = home;
		if (!e->trunk) {
			rc = -CCQ_E164_E_NATIONAL;
			goto fail;
		}
		nsn = d;
		nsn_len = nd;
		if (starts_with(nsn, nsn_len, e->trunk)) {
			nsn += strlen(e->trunk);
			nsn_len -= strlen(e->trunk);
		}
	}

	if (nsn_len == 0) {
		rc = -CCQ_E164_E_TOO_SHORT;
		goto fail;
	}
	rc = check_number(e, nsn, nsn_len);
	if (rc < 0)
		goto fail;

	{
		size_t ccn = cc_digits(e->cc);
		unsigned cc = e->cc;

		for (i = ccn; i > 0; i--) {
			out[i - 1] = (char)('0' + cc % 10);
			cc /= 10;
		}
		memcpy(out + ccn, nsn, nsn_len);
		out[ccn + nsn_len] = '\0';
	}
	if (why)
		*why = NULL;
	return 0;

fail:
	out[0] = '\0';
	if (why)
		*why = ccq_e164_strerror(rc);
	return rc;
}
