/*
 * ccq E.164 normalisation: turns what an agent dials or what an admin
 * imports into the canonical form every compliance list and the gate use,
 * the E.164 digits without '+' ("6591234567").
 *
 * The rules (accepted separators, international and trunk prefixes, length
 * bounds, the calling-code table) are described in doc/compliance.md.
 * Pure functions, no allocation, no locale: safe in any Kamailio process.
 */
#ifndef CCQ_E164_H
#define CCQ_E164_H

#include <stddef.h>

/* E.164 allows at most 15 digits (country code included). */
#define CCQ_E164_MAX_DIGITS 15
/* The shortest numbers in service (e.g. Niue, +683 xxxx) have 7 digits. */
#define CCQ_E164_MIN_DIGITS 7
/* Size of an output buffer: 15 digits and the NUL. */
#define CCQ_E164_BUFSZ (CCQ_E164_MAX_DIGITS + 1)

/* Rejections; ccq_e164_normalize() returns the negated value. */
enum ccq_e164_err {
	CCQ_E164_OK = 0,
	CCQ_E164_E_EMPTY = 1,         /* nothing but separators */
	CCQ_E164_E_LETTERS = 2,       /* a letter anywhere */
	CCQ_E164_E_BAD_CHAR = 3,      /* a character that is not a digit/separator */
	CCQ_E164_E_PLUS = 4,          /* '+' not at the start, or twice */
	CCQ_E164_E_ONLY_PLUS = 5,     /* '+' (or "00") with no digits after it */
	CCQ_E164_E_TOO_SHORT = 6,
	CCQ_E164_E_TOO_LONG = 7,
	CCQ_E164_E_UNKNOWN_CC = 8,    /* no such country calling code */
	CCQ_E164_E_NO_COUNTRY = 9,    /* national number, default country unknown */
	CCQ_E164_E_NATIONAL = 10,     /* national format not supported for that country */
	CCQ_E164_E_BAD_NUMBER = 11,   /* digits impossible for the country (NANP 0/1xx) */
	CCQ_E164_E_MAX_
};

/*
 * Normalise the len bytes at in (need not be NUL-terminated).
 *
 * default_country is the organisation's ISO 3166 alpha-2 code ("SG",
 * case-insensitive); it is used only for numbers written in national format
 * and may be NULL when every number is international.
 *
 * On success writes the E.164 digits (no '+') and a NUL to out and returns 0.
 * On failure returns -CCQ_E164_E_*, leaves out as an empty string and, if why
 * is not NULL, points *why at a static explanation ("contains letters").
 */
int ccq_e164_normalize(const char *in, size_t len, const char *default_country,
		char out[CCQ_E164_BUFSZ], const char **why);

/* Static text for a rejection code (positive or negative). */
const char *ccq_e164_strerror(int err);

/*
 * Country calling code (1 to 3 digits) that the E.164 digits start with, or
 * 0 if the digits start with no assigned code (or are not digits).
 */
int ccq_e164_country_code(const char *digits);

/*
 * ISO 3166 alpha-2 region of an E.164 number ("SG"), or NULL for an unknown
 * calling code. Shared calling codes are split where the table knows how:
 * +1 by NANP area code (CA, JM, PR, DO, BS, ...; anything not listed is
 * "US"), +7 (KZ for 76/77, else RU), +44 (GG, JE, IM), +39 06698 (VA),
 * +358 18 (AX), +262 269/639 (YT), +599 9 (CW) / 3,4,7 (BQ),
 * +61 89162 (CC) / 89164 (CX). Non-geographic codes (+800, +808, +870,
 * +881, +882, +883, +888, +979) give "001" (the UN M.49 code for the world).
 */
const char *ccq_e164_country(const char *digits);

/*
 * 1 if iso names a region of the table (case-insensitive), else 0. For
 * validating configured default countries and country whitelists.
 */
int ccq_e164_region_known(const char *iso);

/*
 * Calling code of a region (65 for "SG", 1 for "US" or "CA"), 0 if unknown.
 */
int ccq_e164_region_code(const char *iso);

#endif /* CCQ_E164_H */
