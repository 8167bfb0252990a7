/*
 * proto's private interface between its MessagePack layer (msgpack.c) and its codecs
 * (messages.c for messages, reply.c for REPLY bodies): a bounded skip over one object of any
 * type, which the message decoder uses to find the keys of the top-level map before it knows
 * the message type, and which proto_peek_req uses to step over values it does not read; and the
 * text checks both codecs share, so that a text field means the same on every map.
 */
#ifndef CHESSLENS_PROTO_INT_H
#define CHESSLENS_PROTO_INT_H

#include "proto/proto.h"

/* Top-level map entries a message may have (the largest type has 9). */
#define PROTO_MAX_KEYS 24

/* Steps over the next object. `levels` is how many containers may nest in it (0: a scalar, str
 * or bin only; 2: an array of maps of scalars); deeper nesting is INVALID. Every declared length
 * and count is checked against the bytes left (PARSE), 0xc1 and ext types are PARSE, and
 * nothing recurses. */
int proto_r_skip(proto_reader *r, int levels, const char *what, char *err);

/* A text field: a str of lo..hi bytes without a NUL byte, as a view (messages.c). */
int proto_r_text(proto_reader *r, uint64_t lo, uint64_t hi, const char **s, size_t *n,
                 const char *what, char *err);
/* The encoder's check of the same rule on a C string; NULL passes when lo is 0 (a message
 * writes it as ""). */
int proto_check_text(const char *s, uint64_t lo, uint64_t hi, const char *what, char *err);
/* A short, printable copy of untrusted bytes s[n] for an error message, in buf[cap] (cap >= 8):
 * quotes, backslashes and control bytes become '?', and a long text ends in "...". */
const char *proto_printable(const char *s, size_t n, char *buf, size_t cap);

#endif
