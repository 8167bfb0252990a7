/*
 * proto's private interface between its MessagePack layer (msgpack.c) and its message codecs
 * (messages.c): a bounded skip over one object of any type, which the message decoder uses to
 * find the keys of the top-level map before it knows the message type, and which
 * proto_peek_req uses to step over values it does not read.
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

#endif
