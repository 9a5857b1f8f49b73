/*
 * Call recordings: rtpengine's pcap files decoded to PCM, and a WAV writer.
 * Used by ccqrec(1); the format and the rules are in doc/recording.md.
 *
 * The decoder reads a classic libpcap file held in memory (the tool maps
 * it): both byte orders, micro- and nanosecond timestamps, link types raw
 * IP (101, 12, 228, 229), Ethernet (1), Linux cooked (113, 276) and BSD
 * loopback (0); IPv4 (fragments are skipped and counted) and IPv6 UDP; RTP
 * version 2 with CSRCs, header extension and padding. Packets are grouped
 * into streams by source address and port and SSRC; G.711 µ-law (PT 0) and
 * A-law (PT 8) are decoded, comfort noise (13) and telephone events
 * (101-127) are skipped, anything else is an error naming the codec.
 *
 * Each stream is placed on one timeline: its first packet at its capture
 * time relative to the file's first RTP packet, every other packet by its
 * RTP timestamp (32-bit wraparound handled, reordered packets sorted,
 * duplicates dropped); what no packet covers is silence.
 *
 * Everything is bounded: packets above 64 KiB, more than
 * CCQ_PCAP_MAX_PACKETS packets or CCQ_PCAP_MAX_STREAMS streams, and a
 * timeline longer than the limit (12 h by default) are refused with a
 * reason; every allocation is checked; nothing is read outside the buffer.
 */
#ifndef CCQ_PCAP_H
#define CCQ_PCAP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CCQ_PCAP_RATE 8000u                  /* G.711: samples per second */
#define CCQ_PCAP_MAX_PACKET 65536u           /* captured bytes of one packet */
#define CCQ_PCAP_MAX_PACKETS 10000000u       /* RTP packets in one file */
#define CCQ_PCAP_MAX_STREAMS 256u
#define CCQ_PCAP_DEFAULT_MAX_SECONDS (12u * 3600u)

/* Which party a stream belongs to. */
enum ccq_party {
	CCQ_PARTY_CALLER = 0, /* the caller / customer: left channel */
	CCQ_PARTY_AGENT = 1,  /* the agent: right channel */
};

struct ccq_pcap_opts {
	/* The parties' addresses as "IP:PORT", "[IPv6]:PORT" or "IP" (any
	 * port); NULL or "" if unknown. A stream belongs to the party whose
	 * address is its source or its destination (rtpengine records each
	 * packet from the party's address to rtpengine's port for that party,
	 * and both appear in the call's SDPs). Unmatched streams fall back to
	 * the order in which source addresses first appear (a note says so). */
	const char *caller;
	const char *agent;
	/* SDP text (or rtpengine's metadata file) whose a=rtpmap lines name
	 * dynamic payload types and name codecs in errors; NULL if none. */
	const char *rtpmap;
	size_t rtpmap_len;
	/* The longest timeline accepted, in seconds; 0 = 12 h. */
	uint32_t max_seconds;
};

struct ccq_pcap_stream {
	char src[64];         /* "IP:PORT" ("[v6]:PORT") the packets came from */
	char dst[64];         /* "IP:PORT" they went to */
	uint32_t ssrc;
	int party;            /* enum ccq_party */
	uint8_t pt;           /* the audio payload type (0 or 8) */
	uint32_t packets;     /* audio packets kept */
	uint32_t duplicates;  /* dropped: same sequence number again */
	uint32_t lost;        /* sequence numbers never seen */
	uint32_t skipped;     /* comfort noise and telephone events */
	uint64_t start;       /* first sample on the timeline */
	uint64_t end;         /* one past the last sample */
	/* internal */
	uint8_t fam_;            /* 4 or 6 */
	uint8_t sa_[16], da_[16];
	uint16_t sp_, dp_;
	size_t first_, count_;   /* its packets in the sorted index */
	int64_t cap_ns_;         /* capture time of its first packet */
	int64_t ts0_;            /* that packet's (extended) RTP timestamp */
	int64_t ts_last_, seq_last_; /* unwrapping state */
	int64_t seq_min_, seq_max_;
	int64_t base_;           /* timeline position = base_ + extended timestamp */
};

struct ccq_pcap_counts {
	uint64_t records;     /* pcap records read */
	uint64_t fragments;   /* IP fragments skipped */
	uint64_t not_udp;     /* not IP, or IP but not UDP */
	uint64_t not_rtp;     /* UDP that is not RTP version 2 (STUN, DTLS, ...) */
	uint64_t rtcp;        /* RTCP packets skipped */
	uint64_t skipped;     /* comfort noise and telephone events */
	uint64_t truncated;   /* captured shorter than their headers say */
};

struct ccq_pcap_pkt; /* one RTP audio packet of the index (internal) */

typedef struct ccq_pcap {
	const uint8_t *buf;   /* the file (not owned) */
	size_t len;
	uint32_t linktype;
	int nanosec;
	struct ccq_pcap_stream *streams;
	unsigned nstreams;
	struct ccq_pcap_pkt *pkts;
	size_t npkts, pkts_cap;
	struct ccq_pcap_counts counts;
	uint64_t frames;      /* length of the timeline, in samples */
	char notes[2048];     /* lines for the user: fallbacks, oddities */
	size_t notes_len;
} ccq_pcap;

/*
 * Read and index buf[0..len) (which must stay valid until ccq_pcap_free),
 * assign the streams to the parties and lay out the timeline. Returns 0, or
 * -1 with the reason in err. Call ccq_pcap_free() in both cases.
 */
int ccq_pcap_open(ccq_pcap *p, const uint8_t *buf, size_t len,
		const struct ccq_pcap_opts *opts, char *err, size_t errlen);
void ccq_pcap_free(ccq_pcap *p);

/*
 * The capture time of the timeline's first sample, in nanoseconds since the
 * epoch: the pcap's time of the first stream's first packet, moved by where
 * that packet lies on the timeline. The timeline ends frames samples later
 * (frames * 125000 ns). 0 if no stream. For joining the segments of a call.
 */
int64_t ccq_pcap_start_ns(const ccq_pcap *p);

/*
 * Produce the audio in blocks: mono (every stream summed, clipped) or
 * stereo (the caller's streams left, the agent's right, interleaved).
 * sink gets consecutive blocks of frames; a non-zero return from it stops
 * the rendering and is returned. Returns 0, or -1 with the reason in err.
 */
typedef int (*ccq_pcap_sink)(void *ctx, const int16_t *frames, size_t nframes,
		unsigned channels);
int ccq_pcap_render(const ccq_pcap *p, unsigned channels, ccq_pcap_sink sink,
		void *ctx, char *err, size_t errlen);

/* The whole rendering in one allocated buffer (tests, small files). */
int ccq_pcap_render_mem(const ccq_pcap *p, unsigned channels, int16_t **pcm,
		char *err, size_t errlen);

/* Render to a WAV file (RIFF, PCM 16-bit, 8 kHz, 1 or 2 channels). */
int ccq_pcap_write_wav(const ccq_pcap *p, unsigned channels, FILE *f,
		char *err, size_t errlen);

/* The 44-byte header of a WAV file of frames frames; -1 if it is too long. */
int ccq_wav_header(uint8_t hdr[44], uint64_t frames, unsigned channels);

/* G.711 (ITU-T G.711, 16-bit linear scale). */
int16_t ccq_ulaw_decode(uint8_t u);
int16_t ccq_alaw_decode(uint8_t a);
uint8_t ccq_ulaw_encode(int16_t pcm);
uint8_t ccq_alaw_encode(int16_t pcm);

/*
 * The name of a payload type for messages: from the rtpmap text if it names
 * pt, else the static name of RFC 3551 ("G722"), else "". Writes at most
 * size bytes into buf; returns buf.
 */
const char *ccq_rtp_codec_name(const char *rtpmap, size_t rtpmap_len, unsigned pt,
		char *buf, size_t size);

#endif
