/* base64.h -- base64 (RFC 4648's standard alphabet) with nginx's decoding rules, without Lua:
 * ngx.encode_base64 and ngx.decode_base64 (lngx.c). */
#ifndef BASE64_H
#define BASE64_H

#include <stdbool.h>
#include <stddef.h>

/* Room that base64_encode needs for len bytes, and that base64_decode needs for len digits. */
#define BASE64_ENCODED_SIZE(len) (((len) + 2) / 3 * 4)
#define BASE64_DECODED_SIZE(len) ((len) / 4 * 3 + 2)

/* Writes the base64 of in[0..len) to out, "=" padded if pad; returns the length written. */
size_t base64_encode(char *out, const unsigned char *in, size_t len, bool pad);

/* Decodes in[0..len) into out and sets *out_len; returns 0, or -1 if in is not base64. nginx's
 * rules (ngx_decode_base64): the digits end at the first "=" and whatever follows it is ignored,
 * padding is optional, and any other byte before it, or a lone sixth of a byte at the end,
 * makes the input invalid. */
int base64_decode(unsigned char *out, const char *in, size_t len, size_t *out_len);

#endif
