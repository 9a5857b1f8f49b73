/* libFuzzer target: call recordings (pcap -> RTP -> G.711 -> PCM). */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "ccq_pcap.h"

static int sink(void *ctx, const int16_t *frames, size_t n, unsigned channels)
{
	(void)frames;
	if (channels != 1 && channels != 2)
		__builtin_trap();
	*(uint64_t *)ctx += n;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char sdp[] = "m=audio 4000 RTP/AVP 0 8 98 96 101\r\n"
		"a=rtpmap:98 PCMA/8000\r\na=rtpmap:96 opus/48000/2\r\n"
		"a=rtpmap:101 telephone-event/8000\r\n";
	struct ccq_pcap_opts o = { 0 };
	char err[512], name[32];
	ccq_pcap p;
	uint64_t n = 0;

	/* bytes as SDP: the rtpmap scanner stays inside them */
	ccq_rtp_codec_name((const char *)data, size, size ? data[0] & 0x7F : 0, name, sizeof(name));
	o.caller = "127.0.0.1:34010";
	o.agent = "[::1]:34000";
	o.rtpmap = sdp;
	o.rtpmap_len = sizeof(sdp) - 1;
	o.max_seconds = 20; /* keeps each rendering short */
	if (ccq_pcap_open(&p, data, size, &o, err, sizeof(err)) == 0) {
		if (p.nstreams == 0 || p.frames > 20u * CCQ_PCAP_RATE)
			__builtin_trap();
		for (unsigned i = 0; i < p.nstreams; i++)
			if (p.streams[i].start >= p.streams[i].end || p.streams[i].end > p.frames
					|| p.streams[i].party < 0 || p.streams[i].party > 1)
				__builtin_trap();
		if (ccq_pcap_render(&p, (size & 1) + 1, sink, &n, err, sizeof(err)) != 0
				|| n != p.frames)
			__builtin_trap();
	} else if (!memchr(err, '\0', sizeof(err)) || !err[0]) {
		__builtin_trap();
	}
	ccq_pcap_free(&p);
	return 0;
}
