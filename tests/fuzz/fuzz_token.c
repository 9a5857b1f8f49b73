/* libFuzzer target: callback tokens from SIP headers and Refer-To URIs. */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "ccq_token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ccq_token t;
	static const char secret[] = "fuzz-secret";
	int rc = ccq_token_verify(secret, sizeof(secret) - 1, (const char *)data, size, 1700000000, &t);
	if (rc == CCQ_TOKEN_OK || rc == CCQ_TOKEN_EXPIRED) {
		/* a token that verifies must round-trip through sign */
		char out[CCQ_TOKEN_MAX];
		if (ccq_token_sign(secret, sizeof(secret) - 1, &t, out, sizeof(out)) != CCQ_TOKEN_OK
				|| strlen(out) != size || memcmp(out, data, size) != 0)
			__builtin_trap();
	}
	return 0;
}
