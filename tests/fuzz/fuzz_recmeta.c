/* libFuzzer target: rtpengine's recording metadata files (queued/recmeta.c)
 * and the names they come under. */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "recmeta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct recmeta m;
	char err[200], out[256], name[512];

	if (recmeta_parse((const char *)data, size, &m, err, sizeof(err)) == 0) {
		/* what the indexer reads of a parsed file */
		recmeta_field(m.meta, "ccq_txn", out, sizeof(out));
		recmeta_field(m.meta, "ccq_agent", out, sizeof(out));
	}
	if (size < sizeof(name)) {
		memcpy(name, data, size);
		name[size] = '\0';
		recmeta_call_id(name, out, sizeof(out));
	}
	return 0;
}
