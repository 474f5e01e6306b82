/* utf8.h -- whether bytes are text as Python's strict UTF-8 decoder reads it: the encoders send
 * such strings as text (MessagePack str, pickle str) and others as binary, so that Python gets
 * back what it can decode. */
#ifndef UTF8_H
#define UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..len) is valid UTF-8 with no overlong forms, surrogates or code points above
 * U+10FFFF. */
bool utf8_valid(const char *s, size_t len);

#endif
