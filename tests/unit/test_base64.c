/* Unit tests for base64.c: RFC 4648's test vectors (section 10) with and without padding, and
 * nginx's decoding rules: padding optional, digits end at the first "=", anything else invalid,
 * as is a lone digit at the end (a sixth of a byte). */
#include <stdbool.h>
#include <string.h>

#include "base64.h"
#include "check.h"

static const char *const rfc_plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
static const char *const rfc_encoded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                          "Zm9vYmFy"};
static const char *const rfc_unpadded[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE",
                                           "Zm9vYmFy"};

/* Whether decoding text gives want (want NULL: text is invalid). */
static bool decodes_to(const char *text, const char *want)
{
    unsigned char out[64];
    size_t n;
    if (base64_decode(out, text, strlen(text), &n) < 0)
        return want == NULL;
    return want != NULL && n == strlen(want) && memcmp(out, want, n) == 0;
}

static void test_rfc_vectors(void)
{
    for (size_t i = 0; i < sizeof rfc_plain / sizeof rfc_plain[0]; i++) {
        char out[64];
        size_t len = strlen(rfc_plain[i]);
        size_t n = base64_encode(out, (const unsigned char *)rfc_plain[i], len, true);
        CHECK(n == strlen(rfc_encoded[i]) && memcmp(out, rfc_encoded[i], n) == 0);
        CHECK(n <= BASE64_ENCODED_SIZE(len));
        n = base64_encode(out, (const unsigned char *)rfc_plain[i], len, false);
        CHECK(n == strlen(rfc_unpadded[i]) && memcmp(out, rfc_unpadded[i], n) == 0);
        CHECK(decodes_to(rfc_encoded[i], rfc_plain[i]));
        CHECK(decodes_to(rfc_unpadded[i], rfc_plain[i]));
    }
}

static void test_nginx_rules(void)
{
    CHECK(decodes_to("Zm9v=garbage!", "foo"));
    CHECK(decodes_to("Zg=", "f"));
    CHECK(decodes_to("=Zm9v", ""));
    CHECK(decodes_to("Z", NULL));
    CHECK(decodes_to("Zm9vY", NULL));
    CHECK(decodes_to("Zm9v!", NULL));
    CHECK(decodes_to("Zm 9v", NULL));
    CHECK(decodes_to("Zm9v\n", NULL));
    CHECK(decodes_to("-_-_", NULL));
    CHECK(decodes_to("+/+/", "\xfb\xff\xbf"));
}

static void test_every_byte_round_trips(void)
{
    unsigned char all[256], back[BASE64_DECODED_SIZE(BASE64_ENCODED_SIZE(256))];
    char text[BASE64_ENCODED_SIZE(256)];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    for (size_t len = 0; len <= 256; len++) {
        for (int pad = 0; pad <= 1; pad++) {
            size_t n = base64_encode(text, all, len, pad);
            size_t m;
            CHECK(base64_decode(back, text, n, &m) == 0 && m == len && memcmp(back, all, len) == 0);
        }
    }
}

int main(void)
{
    test_rfc_vectors();
    test_nginx_rules();
    test_every_byte_round_trips();
    return check_report();
}
