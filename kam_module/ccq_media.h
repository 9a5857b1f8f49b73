/* Hold music for queued callers through rtpengine's ng protocol; see ccq_media.c. */
#ifndef CCQ_MEDIA_H
#define CCQ_MEDIA_H

#include "core/parser/msg_parser.h"

/* ng_addr: "udp:127.0.0.1:22222" ("" disables); hold_file: a WAV rtpengine can read. */
int ccq_media_init(const char *ng_addr, const char *hold_file);
int ccq_media_enabled(void);
/* 183 with rtpengine's SDP and the music: 1 ok, 2 early media without music, -1 failed. */
int ccq_media_hold(struct sip_msg *msg);
/* Stop the music (before ringing an agent). */
int ccq_media_unhold(struct sip_msg *msg);

/* rtpengine's ng socket is configured (prompts need only that). */
int ccq_media_ng_enabled(void);
/* Play file to the party of call callid whose tag is tag (that party
 * hears it). 0 with the file's length in *duration_ms, -1 with why. */
int ccq_media_play_to(const char *callid, const char *tag, const char *file, long *duration_ms,
		char *why, size_t why_size);
/* A call-wide ng command ("start recording", "pause recording", ...):
 * 0 ok, -1 with why. */
int ccq_media_ng_command(const char *command, const char *callid, char *why, size_t why_size);
/* Drop rtpengine's session of a call (a leg ccq ended itself). */
int ccq_media_delete_call(const char *callid);

#endif
