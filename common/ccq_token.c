/* Callback tokens; see ccq_token.h. */
#include "ccq_token.h"

#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define MAC_HEX 32

static int ext_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 32)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
				|| c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

static int digits_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 15)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

static int flags_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 7)
		return 0;
	if (strcmp(s, "-") == 0)
		return 1;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 'a' || s[i] > 'z')
			return 0;
	return 1;
}

static int nonce_ok(const char *s)
{
	if (strlen(s) != 16)
		return 0;
	for (int i = 0; i < 16; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

static int mac_hex(const char *secret, size_t slen, const char *msg, size_t mlen,
		char out[MAC_HEX + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	static const char hx[] = "0123456789abcdef";

	if (!HMAC(EVP_sha256(), secret, (int)slen, (const unsigned char *)msg, mlen, md, &mdlen)
			|| mdlen < MAC_HEX / 2)
		return -1;
	for (int i = 0; i < MAC_HEX / 2; i++) {
		out[2 * i] = hx[md[i] >> 4];
		out[2 * i + 1] = hx[md[i] & 15];
	}
	out[MAC_HEX] = '\0';
	return 0;
}

int ccq_token_sign(const char *secret, size_t secret_len, struct ccq_token *t, char *out,
		size_t size)
{
	char mac[MAC_HEX + 1];
	int n;

	if (!secret || secret_len == 0)
		return CCQ_TOKEN_NO_SECRET;
	if ((t->purpose != 'a' && t->purpose != 'c') || !t->txn || !ext_ok(t->ext)
			|| !digits_ok(t->digits) || !flags_ok(t->flags[0] ? t->flags : "-") || !t->exp)
		return CCQ_TOKEN_MALFORMED;
	if (!t->flags[0])
		strcpy(t->flags, "-");
	if (!t->nonce[0]) {
		unsigned char r[8];
		static const char hx[] = "0123456789abcdef";
		if (RAND_bytes(r, sizeof(r)) != 1)
			return CCQ_TOKEN_MALFORMED;
		for (int i = 0; i < 8; i++) {
			t->nonce[2 * i] = hx[r[i] >> 4];
			t->nonce[2 * i + 1] = hx[r[i] & 15];
		}
		t->nonce[16] = '\0';
	}
	if (!nonce_ok(t->nonce))
		return CCQ_TOKEN_MALFORMED;
	n = snprintf(out, size, "1.%c.%llu.%s.%s.%s.%llu.%s", t->purpose,
		(unsigned long long)t->txn, t->ext, t->digits, t->flags, (unsigned long long)t->exp,
		t->nonce);
	if (n < 0 || (size_t)n + 1 + MAC_HEX + 1 > size)
		return CCQ_TOKEN_MALFORMED;
	if (mac_hex(secret, secret_len, out, (size_t)n, mac) < 0)
		return CCQ_TOKEN_MALFORMED;
	out[n] = '.';
	memcpy(out + n + 1, mac, MAC_HEX + 1);
	return CCQ_TOKEN_OK;
}

/* Copy field i (0-based, '.'-separated) of s into buf. */
static int field(const char *s, size_t len, int i, char *buf, size_t size)
{
	size_t start = 0, k;
	for (int f = 0; f < i; f++) {
		const char *d = memchr(s + start, '.', len - start);
		if (!d)
			return -1;
		start = (size_t)(d - s) + 1;
	}
	for (k = start; k < len && s[k] != '.'; k++)
		;
	if (k - start >= size)
		return -1;
	memcpy(buf, s + start, k - start);
	buf[k - start] = '\0';
	return 0;
}

static int parse_u64(const char *s, uint64_t *v)
{
	uint64_t x = 0;
	if (!*s || strlen(s) > 19)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		x = x * 10 + (uint64_t)(*s - '0');
	}
	*v = x;
	return 0;
}

int ccq_token_verify(const char *secret, size_t secret_len, const char *tok, size_t len,
		uint64_t now, struct ccq_token *t)
{
	char buf[24], mac[MAC_HEX + 1], want[MAC_HEX + 1];
	const char *last;
	int dots = 0;

	memset(t, 0, sizeof(*t));
	if (!secret || secret_len == 0)
		return CCQ_TOKEN_NO_SECRET;
	if (!tok || len < 20 || len >= CCQ_TOKEN_MAX)
		return CCQ_TOKEN_MALFORMED;
	for (size_t i = 0; i < len; i++) {
		char c = tok[i];
		if (c == '.')
			dots++;
		else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
				|| c == '_' || c == '-'))
			return CCQ_TOKEN_MALFORMED;
	}
	if (dots != 8)
		return CCQ_TOKEN_MALFORMED;
	if (field(tok, len, 0, buf, sizeof(buf)) < 0 || strcmp(buf, "1") != 0)
		return CCQ_TOKEN_MALFORMED;
	if (field(tok, len, 1, buf, sizeof(buf)) < 0 || strlen(buf) != 1
			|| (buf[0] != 'a' && buf[0] != 'c'))
		return CCQ_TOKEN_MALFORMED;
	t->purpose = buf[0];
	if (field(tok, len, 2, buf, sizeof(buf)) < 0 || parse_u64(buf, &t->txn) < 0 || !t->txn
			|| field(tok, len, 3, t->ext, sizeof(t->ext)) < 0 || !ext_ok(t->ext)
			|| field(tok, len, 4, t->digits, sizeof(t->digits)) < 0 || !digits_ok(t->digits)
			|| field(tok, len, 5, t->flags, sizeof(t->flags)) < 0 || !flags_ok(t->flags)
			|| field(tok, len, 6, buf, sizeof(buf)) < 0 || parse_u64(buf, &t->exp) < 0
			|| field(tok, len, 7, t->nonce, sizeof(t->nonce)) < 0 || !nonce_ok(t->nonce)
			|| field(tok, len, 8, mac, sizeof(mac)) < 0 || strlen(mac) != MAC_HEX) {
		memset(t, 0, sizeof(*t));
		return CCQ_TOKEN_MALFORMED;
	}
	last = tok + len - MAC_HEX - 1;
	if (mac_hex(secret, secret_len, tok, (size_t)(last - tok), want) < 0
			|| CRYPTO_memcmp(want, mac, MAC_HEX) != 0) {
		memset(t, 0, sizeof(*t));
		return CCQ_TOKEN_BAD_MAC;
	}
	if (t->exp < now)
		return CCQ_TOKEN_EXPIRED;
	return CCQ_TOKEN_OK;
}

const char *ccq_token_strerror(int err)
{
	switch (err) {
	case CCQ_TOKEN_OK: return "valid";
	case CCQ_TOKEN_MALFORMED: return "malformed token";
	case CCQ_TOKEN_BAD_MAC: return "bad signature (forged or another secret)";
	case CCQ_TOKEN_EXPIRED: return "expired";
	case CCQ_TOKEN_NO_SECRET: return "no callback secret configured";
	}
	return "unknown error";
}
