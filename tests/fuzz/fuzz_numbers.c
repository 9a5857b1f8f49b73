/*
 * libFuzzer target for the decoders of outside input in the compliance code:
 * E.164 normalisation of dialled strings and the number-set image check
 * (an image read back from shared memory or a file must be refused if it is
 * corrupt, never trusted).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccq_e164.h"
#include "ccq_numset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char out[CCQ_E164_BUFSZ], again[CCQ_E164_BUFSZ];
	const char *why;
	static const char *const countries[] = { "SG", "US", "GB", "IT", "AU", NULL, "ZZ" };

	/* normalisation: a result must normalise to itself */
	for (size_t i = 0; i < sizeof(countries) / sizeof(countries[0]); i++) {
		if (ccq_e164_normalize((const char *)data, size, countries[i], out, &why) == 0) {
			char plus[CCQ_E164_BUFSZ + 1];
			plus[0] = '+';
			memcpy(plus + 1, out, strlen(out) + 1);
			if (ccq_e164_normalize(plus, strlen(plus), NULL, again, &why) != 0
					|| strcmp(out, again) != 0)
				abort();
			(void)ccq_e164_country(out);
		}
	}
	/* an image: the check must hold whatever the bytes */
	if (size >= 8) {
		void *img = malloc(size);
		if (!img)
			return 0;
		memcpy(img, data, size);
		if (ccq_numset_check(img, size) == 0) {
			(void)ccq_numset_count(img);
			(void)ccq_numset_contains(img, "6591234567");
		}
		free(img);
	}
	return 0;
}
