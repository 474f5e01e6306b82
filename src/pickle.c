/* pickle.c -- Python's pickle for plain data; see pickle.h. Opcode names are pickletools'. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "errors.h"
#include "lvalues.h"
#include "pickle.h"
#include "tablepath.h"
#include "utf8.h"

#define ERR_UNKNOWN "pickle: unknown opcode"
#define ERR_MALFORMED "pickle: malformed argument"
#define ERR_STACK "pickle: stack underflow or wrong kind of value"
#define ERR_NO_MARK "pickle: no MARK"
#define ERR_ODD "pickle: a dict needs keys and values in pairs"
#define ERR_TOO_DEEP "pickle: nesting too deep"
#define ERR_MEMO "pickle: GET of a memo slot never PUT"
#define ERR_RANGE "pickle: integer out of range (64 bits)"
#define ERR_PROTO "pickle: unsupported protocol (0 to 5)"
#define ERR_FRAME "pickle: opcode crosses the end of its FRAME"
#define ERR_BAD_KEY "pickle: dict key or set member is None or NaN (no Lua table key)"
#define ERR_TRAILING "pickle: bytes after STOP"
#define ERR_TRUNCATED "pickle: truncated"

/* What follows an opcode: nothing, a fixed number of bytes, a little-endian length of 1, 4 or 8
 * bytes and that many bytes, or text up to a newline. */
enum arg { ARG_NONE, ARG_FIXED, ARG_LEN1, ARG_LEN4, ARG_LEN8, ARG_LINE };

struct opinfo {
    const char *name;
    unsigned char arg, size;
    const char *refusal; /* opcodes that import, call or need what the caller did not give */
};

#define OP(code, op_name, arg_kind, arg_size) [code] = {op_name, arg_kind, arg_size, NULL}
#define REFUSED(code, op_name) \
    [code] = {op_name, ARG_NONE, 0, "pickle: opcode " op_name " not allowed (plain data only)"}

static const struct opinfo ops[256] = {
    OP('(', "MARK", ARG_NONE, 0),
    OP('.', "STOP", ARG_NONE, 0),
    OP('0', "POP", ARG_NONE, 0),
    OP('1', "POP_MARK", ARG_NONE, 0),
    OP('2', "DUP", ARG_NONE, 0),
    OP('F', "FLOAT", ARG_LINE, 0),
    OP('I', "INT", ARG_LINE, 0),
    OP('J', "BININT", ARG_FIXED, 4),
    OP('K', "BININT1", ARG_FIXED, 1),
    OP('L', "LONG", ARG_LINE, 0),
    OP('M', "BININT2", ARG_FIXED, 2),
    OP('N', "NONE", ARG_NONE, 0),
    OP('T', "BINSTRING", ARG_LEN4, 0),
    OP('U', "SHORT_BINSTRING", ARG_LEN1, 0),
    OP('V', "UNICODE", ARG_LINE, 0),
    OP('X', "BINUNICODE", ARG_LEN4, 0),
    OP('a', "APPEND", ARG_NONE, 0),
    OP('d', "DICT", ARG_NONE, 0),
    OP('}', "EMPTY_DICT", ARG_NONE, 0),
    OP('e', "APPENDS", ARG_NONE, 0),
    OP('g', "GET", ARG_LINE, 0),
    OP('h', "BINGET", ARG_FIXED, 1),
    OP('j', "LONG_BINGET", ARG_FIXED, 4),
    OP('l', "LIST", ARG_NONE, 0),
    OP(']', "EMPTY_LIST", ARG_NONE, 0),
    OP('p', "PUT", ARG_LINE, 0),
    OP('q', "BINPUT", ARG_FIXED, 1),
    OP('r', "LONG_BINPUT", ARG_FIXED, 4),
    OP('s', "SETITEM", ARG_NONE, 0),
    OP('t', "TUPLE", ARG_NONE, 0),
    OP(')', "EMPTY_TUPLE", ARG_NONE, 0),
    OP('u', "SETITEMS", ARG_NONE, 0),
    OP('G', "BINFLOAT", ARG_FIXED, 8),
    OP('B', "BINBYTES", ARG_LEN4, 0),
    OP('C', "SHORT_BINBYTES", ARG_LEN1, 0),
    OP(0x80, "PROTO", ARG_FIXED, 1),
    OP(0x85, "TUPLE1", ARG_NONE, 0),
    OP(0x86, "TUPLE2", ARG_NONE, 0),
    OP(0x87, "TUPLE3", ARG_NONE, 0),
    OP(0x88, "NEWTRUE", ARG_NONE, 0),
    OP(0x89, "NEWFALSE", ARG_NONE, 0),
    OP(0x8a, "LONG1", ARG_LEN1, 0),
    OP(0x8b, "LONG4", ARG_LEN4, 0),
    OP(0x8c, "SHORT_BINUNICODE", ARG_LEN1, 0),
    OP(0x8d, "BINUNICODE8", ARG_LEN8, 0),
    OP(0x8e, "BINBYTES8", ARG_LEN8, 0),
    OP(0x8f, "EMPTY_SET", ARG_NONE, 0),
    OP(0x90, "ADDITEMS", ARG_NONE, 0),
    OP(0x91, "FROZENSET", ARG_NONE, 0),
    OP(0x94, "MEMOIZE", ARG_NONE, 0),
    OP(0x95, "FRAME", ARG_FIXED, 8),
    OP(0x96, "BYTEARRAY8", ARG_LEN8, 0),
    REFUSED('c', "GLOBAL"),
    REFUSED(0x93, "STACK_GLOBAL"),
    REFUSED('R', "REDUCE"),
    REFUSED('b', "BUILD"),
    REFUSED('i', "INST"),
    REFUSED('o', "OBJ"),
    REFUSED(0x81, "NEWOBJ"),
    REFUSED(0x92, "NEWOBJ_EX"),
    REFUSED(0x82, "EXT1"),
    REFUSED(0x83, "EXT2"),
    REFUSED(0x84, "EXT4"),
    REFUSED('P', "PERSID"),
    REFUSED('Q', "BINPERSID"),
    /* Out-of-band buffers come from the caller of pickle.loads, and we have none. */
    REFUSED(0x97, "NEXT_BUFFER"),
    REFUSED(0x98, "READONLY_BUFFER"),
    /* Python 2's quoted str: Python 3 never writes it (see docs/api.md, "Pickle"). */
    [(unsigned char)'S'] = {"STRING", ARG_NONE, 0, "pickle: opcode STRING not supported"},
};

/* One opcode and where its argument is. */
struct op {
    unsigned char code;
    const unsigned char *arg;
    size_t arg_len;
    size_t end; /* where the next opcode starts */
};

static uint64_t read_le(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i > 0; i--)
        v = v << 8 | p[i - 1];
    return v;
}

/* Reads the opcode at pos and finds its argument. Nothing past max_size is looked at: a length
 * that would end beyond it is refused at once. *seen is how much of a text argument was searched
 * for its newline by an earlier call that said CODEC_MORE. */
static enum codec_status op_read(const unsigned char *d, size_t len, size_t pos, size_t max_size,
                                 size_t *seen, struct op *op, const char **err)
{
    const struct opinfo *info = &ops[d[pos]];
    size_t head = 1, n = 0;
    op->code = d[pos];
    if (info->name == NULL || info->refusal != NULL) {
        *err = info->name == NULL ? ERR_UNKNOWN : info->refusal;
        return CODEC_ERROR;
    }
    if (info->arg == ARG_LINE) {
        size_t limit = len < max_size ? len : max_size;
        const unsigned char *nl = memchr(d + pos + 1 + *seen, '\n', limit - pos - 1 - *seen);
        if (nl == NULL) {
            *seen = limit - pos - 1;
            *err = ERR_TOO_LARGE;
            return limit == max_size ? CODEC_ERROR : CODEC_MORE;
        }
        op->arg = d + pos + 1;
        op->arg_len = (size_t)(nl - op->arg);
        op->end = (size_t)(nl - d) + 1;
        return CODEC_OK;
    }
    if (info->arg == ARG_FIXED)
        n = info->size;
    else if (info->arg != ARG_NONE)
        head += info->arg == ARG_LEN1 ? 1 : info->arg == ARG_LEN4 ? 4 : 8;
    *err = ERR_TOO_LARGE;
    if (head > max_size - pos)
        return CODEC_ERROR;
    if (head > len - pos)
        return CODEC_MORE;
    if (head > 1)
        n = (size_t)read_le(d + pos + 1, head - 1);
    if (head == 9 && read_le(d + pos + 1, 8) > SIZE_MAX)
        return CODEC_ERROR;
    if (n > max_size - pos - head)
        return CODEC_ERROR;
    if (n > len - pos - head)
        return CODEC_MORE;
    op->arg = d + pos + head;
    op->arg_len = n;
    op->end = pos + head + n;
    return CODEC_OK;
}

/* ---- Arguments in text and long form ---- */

/* A decimal integer with an optional sign, in int64 or uint64 range; *negative tells which. */
static bool parse_decimal(const unsigned char *p, size_t n, uint64_t *magnitude, bool *negative)
{
    *negative = n > 0 && p[0] == '-';
    size_t i = n > 0 && (p[0] == '-' || p[0] == '+') ? 1 : 0;
    if (i == n)
        return false;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || v > (UINT64_MAX - (p[i] - '0')) / 10)
            return false;
        v = v * 10 + (p[i] - '0');
    }
    *magnitude = v;
    return !*negative || v <= (uint64_t)INT64_MAX + 1;
}

/* The text of INT and LONG ("I01" and "I00" are True and False, LONG may end in 'L'), or the
 * bytes of LONG1 and LONG4 (little-endian two's complement): *value and whether it is above
 * INT64_MAX. False if it does not fit 64 bits. */
static bool parse_int(const struct op *op, int64_t *value, bool *unsigned_high)
{
    uint64_t m;
    bool negative;
    size_t n = op->arg_len;
    *unsigned_high = false;
    if (op->code == 0x8a || op->code == 0x8b) {
        const unsigned char *p = op->arg;
        bool sign = n > 0 && (p[n - 1] & 0x80);
        unsigned char ext = sign ? 0xff : 0x00;
        while (n > 1 && p[n - 1] == ext && ((p[n - 2] ^ ext) & 0x80) == 0)
            n--; /* bytes that only repeat the sign */
        if (n == 9 && p[8] == 0) {
            *unsigned_high = true;
            *value = (int64_t)read_le(p, 8);
            return true;
        }
        if (n > 8)
            return false;
        uint64_t v = read_le(p, n);
        if (sign && n < 8)
            v |= UINT64_MAX << (8 * n);
        *value = (int64_t)v;
        return true;
    }
    if (op->code == 'L' && n > 0 && op->arg[n - 1] == 'L')
        n--;
    if (!parse_decimal(op->arg, n, &m, &negative))
        return false;
    *unsigned_high = !negative && m > (uint64_t)INT64_MAX;
    *value = negative ? (int64_t)(0 - m) : (int64_t)m;
    return true;
}

/* FLOAT's text: repr of a float ("1.5", "-inf", "nan", "1e+300"). */
static bool parse_float(const struct op *op, double *value)
{
    char text[64];
    if (op->arg_len == 0 || op->arg_len >= sizeof text)
        return false;
    memcpy(text, op->arg, op->arg_len);
    text[op->arg_len] = '\0';
    char *end;
    errno = 0;
    *value = strtod(text, &end);
    return end == text + op->arg_len && errno != EINVAL;
}

/* A memo index: BINPUT/BINGET's byte, LONG_ forms' 4 bytes, or PUT/GET's decimal text. */
static bool parse_memo_key(const struct op *op, uint32_t *key)
{
    uint64_t m;
    bool negative;
    if (op->code == 'p' || op->code == 'g') {
        if (!parse_decimal(op->arg, op->arg_len, &m, &negative) || negative || m > UINT32_MAX)
            return false;
        *key = (uint32_t)m;
    } else {
        *key = (uint32_t)read_le(op->arg, op->arg_len);
    }
    return true;
}

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* UNICODE's raw-unicode-escape, one character at a time: a byte is its code point (Latin-1),
 * except that a backslash ending an odd run of backslashes and followed by u or U starts
 * \uXXXX or \UXXXXXXXX. Returns the code point at *i and moves *i past it, or -1. */
static long raw_unicode_char(const unsigned char *p, size_t n, size_t *i, size_t *run)
{
    unsigned char c = p[*i];
    if (c == '\\') {
        (*run)++;
        (*i)++;
        if (*run % 2 == 1 && *i < n && (p[*i] == 'u' || p[*i] == 'U')) {
            size_t digits = p[*i] == 'u' ? 4 : 8;
            long cp = 0;
            (*i)++;
            *run = 0;
            for (size_t k = 0; k < digits; k++, (*i)++) {
                int h = *i < n ? hex_digit(p[*i]) : -1;
                if (h < 0)
                    return -1;
                cp = cp * 16 + h;
            }
            return cp <= 0x10ffff ? cp : -1;
        }
        return '\\';
    }
    *run = 0;
    (*i)++;
    return c;
}

/* Writes code point cp as UTF-8 (surrogates too, as Python's "surrogatepass" does) into out,
 * which has room for 4; returns the bytes written. */
static size_t utf8_put(unsigned long cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static bool raw_unicode_valid(const struct op *op)
{
    size_t i = 0, run = 0;
    while (i < op->arg_len)
        if (raw_unicode_char(op->arg, op->arg_len, &i, &run) < 0)
            return false;
    return true;
}

/* Checks an opcode's argument once, in the scanner, so that the decoder can trust it. */
static bool arg_valid(const struct op *op)
{
    int64_t i;
    bool high;
    double f;
    uint32_t key;
    switch (op->code) {
    case 'I':
        if (op->arg_len == 2 && op->arg[0] == '0' && (op->arg[1] == '0' || op->arg[1] == '1'))
            return true;
        /* fall through */
    case 'L':
    case 0x8a:
    case 0x8b:
        return parse_int(op, &i, &high);
    case 'F':
        return parse_float(op, &f);
    case 'V':
        return raw_unicode_valid(op);
    case 'p':
    case 'g':
        return parse_memo_key(op, &key);
    default:
        return true;
    }
}

/* ---- The scanner: the pickle machine on kinds ---- */

enum kind { K_VALUE, K_LIST, K_DICT, K_SET };

void pickle_scanner_init(struct pickle_scanner *s)
{
    *s = (struct pickle_scanner){.status = CODEC_MORE};
}

void pickle_scanner_release(struct pickle_scanner *s)
{
    free(s->stack);
    free(s->marks);
    free(s->memo);
    pickle_scanner_init(s);
}

static enum codec_status fail(struct pickle_scanner *s, const char *err)
{
    s->err = err;
    return CODEC_ERROR;
}

/* Doubles *room (from 16) so that *array holds at least want entries of size each. */
static bool grow(void **array, size_t *room, size_t want, size_t size)
{
    if (want <= *room)
        return true;
    size_t n = *room ? *room * 2 : 16;
    void *p = n <= SIZE_MAX / size ? realloc(*array, n * size) : NULL;
    if (p == NULL)
        return false;
    *array = p;
    *room = n;
    return true;
}

/* Entries of the stack since the last MARK, the only ones an opcode may use. */
static size_t frame(const struct pickle_scanner *s)
{
    return s->height - (s->nmarks ? s->marks[s->nmarks - 1] : 0);
}

static enum codec_status push(struct pickle_scanner *s, const struct codec_limits *lim,
                              enum kind kind, int depth)
{
    if (++s->items > lim->max_items)
        return fail(s, CODEC_ERR_TOO_MANY_ITEMS);
    if (depth > lim->max_depth)
        return fail(s, ERR_TOO_DEEP);
    if (!grow((void **)&s->stack, &s->stack_room, s->height + 1, sizeof *s->stack))
        return fail(s, ERR_NO_MEMORY);
    s->stack[s->height++] = (struct pickle_item){(unsigned char)kind, depth};
    if (s->height > s->max_height)
        s->max_height = s->height;
    return CODEC_OK;
}

/* Pops back to the last MARK; *deepest gets the deepest entry popped. */
static bool pop_mark(struct pickle_scanner *s, int *deepest)
{
    if (s->nmarks == 0)
        return false;
    size_t base = s->marks[--s->nmarks];
    *deepest = 0;
    for (size_t i = base; i < s->height; i++)
        if (s->stack[i].depth > *deepest)
            *deepest = s->stack[i].depth;
    s->height = base;
    return true;
}

/* Adds what is nested deepest to the container at the top of the stack. */
static enum codec_status add_to(struct pickle_scanner *s, const struct codec_limits *lim,
                                enum kind kind, int deepest)
{
    if (frame(s) < 1 || s->stack[s->height - 1].kind != kind)
        return fail(s, ERR_STACK);
    struct pickle_item *c = &s->stack[s->height - 1];
    if (deepest + 1 > c->depth)
        c->depth = deepest + 1;
    return c->depth > lim->max_depth ? fail(s, ERR_TOO_DEEP) : CODEC_OK;
}

static struct pickle_memo_slot *memo_find(struct pickle_scanner *s, uint32_t key)
{
    if (s->memo_room == 0)
        return NULL;
    size_t mask = s->memo_room - 1;
    for (size_t i = (key * 2654435761u) & mask;; i = (i + 1) & mask) {
        if (!s->memo[i].used || s->memo[i].key == key)
            return &s->memo[i];
    }
}

static bool memo_put(struct pickle_scanner *s, uint32_t key, struct pickle_item item)
{
    if (2 * (s->memo_count + 1) > s->memo_room) {
        struct pickle_memo_slot *old = s->memo;
        size_t old_room = s->memo_room, room = old_room ? old_room * 2 : 16;
        s->memo = calloc(room, sizeof *s->memo);
        if (s->memo == NULL) {
            s->memo = old;
            return false;
        }
        s->memo_room = room;
        for (size_t i = 0; i < old_room; i++)
            if (old[i].used)
                *memo_find(s, old[i].key) = old[i];
        free(old);
    }
    struct pickle_memo_slot *slot = memo_find(s, key);
    if (!slot->used)
        s->memo_count++;
    *slot = (struct pickle_memo_slot){key, true, item};
    return true;
}

static enum codec_status scan_memo(struct pickle_scanner *s, const struct codec_limits *lim,
                                   const struct op *op)
{
    uint32_t key;
    if (op->code == 0x94)
        key = (uint32_t)s->memo_count;
    else if (!parse_memo_key(op, &key))
        return fail(s, ERR_MALFORMED);
    if (op->code == 'g' || op->code == 'h' || op->code == 'j') {
        struct pickle_memo_slot *slot = memo_find(s, key);
        if (slot == NULL || !slot->used)
            return fail(s, ERR_MEMO);
        return push(s, lim, slot->item.kind, slot->item.depth);
    }
    if (frame(s) < 1)
        return fail(s, ERR_STACK);
    if (!memo_put(s, key, s->stack[s->height - 1]))
        return fail(s, ERR_NO_MEMORY);
    /* Python's pickler memoizes each value once at most; more slots than values pushed is a
     * pickle making work for us. This bounds the memo by max_items too. */
    return s->memo_count > s->items ? fail(s, CODEC_ERR_TOO_MANY_ITEMS) : CODEC_OK;
}

/* Containers: built from the entries since a MARK, from the top n, or added to. */
static enum codec_status scan_container(struct pickle_scanner *s,
                                        const struct codec_limits *lim, unsigned char code)
{
    int deepest = 0;
    size_t n;
    enum codec_status st;
    switch (code) {
    case 'l':
    case 't':
    case 'd':
    case 0x91:
        n = frame(s);
        if (!pop_mark(s, &deepest))
            return fail(s, ERR_NO_MARK);
        if (code == 'd' && n % 2 != 0)
            return fail(s, ERR_ODD);
        return push(s, lim, code == 'l' ? K_LIST : code == 'd' ? K_DICT : K_VALUE, deepest + 1);
    case 0x85:
    case 0x86:
    case 0x87:
        n = (size_t)(code - 0x84);
        if (frame(s) < n)
            return fail(s, ERR_STACK);
        for (size_t i = s->height - n; i < s->height; i++)
            if (s->stack[i].depth > deepest)
                deepest = s->stack[i].depth;
        s->height -= n;
        return push(s, lim, K_VALUE, deepest + 1);
    case 'a':
    case 's': {
        size_t args = code == 'a' ? 1 : 2;
        if (frame(s) < args + 1)
            return fail(s, ERR_STACK);
        for (size_t i = s->height - args; i < s->height; i++)
            if (s->stack[i].depth > deepest)
                deepest = s->stack[i].depth;
        s->height -= args;
        return add_to(s, lim, code == 'a' ? K_LIST : K_DICT, deepest);
    }
    default: /* APPENDS, SETITEMS, ADDITEMS */
        n = frame(s);
        if (!pop_mark(s, &deepest))
            return fail(s, ERR_NO_MARK);
        st = add_to(s, lim, code == 'e' ? K_LIST : code == 'u' ? K_DICT : K_SET, deepest);
        return st == CODEC_OK && code == 'u' && n % 2 != 0 ? fail(s, ERR_ODD) : st;
    }
}

/* Runs one opcode on kinds. CODEC_OK with *stop for STOP. */
static enum codec_status scan_op(struct pickle_scanner *s, const struct codec_limits *lim,
                                 const struct op *op, size_t pos, bool *stop)
{
    int deepest;
    switch (op->code) {
    case '.':
        *stop = true;
        return frame(s) >= 1 ? CODEC_OK : fail(s, ERR_STACK);
    case '(':
        if (s->nmarks >= (size_t)lim->max_depth)
            return fail(s, ERR_TOO_DEEP);
        if (!grow((void **)&s->marks, &s->mark_room, s->nmarks + 1, sizeof *s->marks))
            return fail(s, ERR_NO_MEMORY);
        s->marks[s->nmarks++] = s->height;
        if (s->nmarks > s->max_marks)
            s->max_marks = s->nmarks;
        return CODEC_OK;
    case '0': /* POP with nothing since the MARK pops the MARK, as Python's does */
        if (frame(s) >= 1)
            s->height--;
        else if (!pop_mark(s, &deepest))
            return fail(s, ERR_STACK);
        return CODEC_OK;
    case '1':
        return pop_mark(s, &deepest) ? CODEC_OK : fail(s, ERR_NO_MARK);
    case '2':
        if (frame(s) < 1)
            return fail(s, ERR_STACK);
        return push(s, lim, s->stack[s->height - 1].kind, s->stack[s->height - 1].depth);
    case 0x80:
        return op->arg[0] <= 5 ? CODEC_OK : fail(s, ERR_PROTO);
    case 0x95:
        if (pos < s->frame_end)
            return fail(s, ERR_FRAME);
        /* A frame's length is only a hint to Python's reader; here, one more limit. */
        if (read_le(op->arg, 8) > lim->max_size - op->end)
            return fail(s, ERR_TOO_LARGE);
        s->frame_end = op->end + read_le(op->arg, 8);
        return CODEC_OK;
    case ']':
        return push(s, lim, K_LIST, 1);
    case '}':
        return push(s, lim, K_DICT, 1);
    case 0x8f:
        return push(s, lim, K_SET, 1);
    case ')':
        return push(s, lim, K_VALUE, 1);
    case 'p': case 'q': case 'r': case 0x94: case 'g': case 'h': case 'j':
        return scan_memo(s, lim, op);
    case 'l': case 't': case 'd': case 0x91: case 0x85: case 0x86: case 0x87:
    case 'a': case 's': case 'e': case 'u': case 0x90:
        return scan_container(s, lim, op->code);
    default: /* scalars */
        return arg_valid(op) ? push(s, lim, K_VALUE, 0) : fail(s, ERR_MALFORMED);
    }
}

static enum codec_status scan_resume(struct pickle_scanner *s, const unsigned char *d, size_t len,
                                     const struct codec_limits *lim)
{
    bool stop = false;
    while (!stop) {
        struct op op;
        size_t pos = s->pos;
        if (pos >= lim->max_size)
            return fail(s, ERR_TOO_LARGE);
        if (pos == len)
            return CODEC_MORE;
        enum codec_status st = op_read(d, len, pos, lim->max_size, &s->seen, &op, &s->err);
        if (st != CODEC_OK)
            return st;
        if (pos < s->frame_end && op.end > s->frame_end)
            return fail(s, ERR_FRAME);
        if (scan_op(s, lim, &op, pos, &stop) != CODEC_OK)
            return CODEC_ERROR;
        s->pos = op.end;
        s->seen = 0;
    }
    return CODEC_OK;
}

enum codec_status pickle_scan(struct pickle_scanner *s, const char *data, size_t len,
                              const struct codec_limits *limits, size_t *frame_len,
                              const char **err)
{
    /* Bytes it had scanned are gone: whatever it kept is about other bytes. */
    if (s->pos + (s->seen ? 1 + s->seen : 0) > len)
        pickle_scanner_release(s);
    if (s->status == CODEC_MORE)
        s->status = scan_resume(s, (const unsigned char *)data, len, limits);
    if (s->status == CODEC_OK)
        *frame_len = s->pos;
    else if (s->status == CODEC_ERROR)
        *err = s->err;
    return s->status;
}

/* ---- Decoding: the pickle machine on Lua values, for what the scanner vouched for ---- */

#define MEMO_INDEX 2 /* the memo table's stack index in decode_run */

struct dec {
    const unsigned char *data;
    size_t len;
    bool exact;
    int *marks; /* the Lua stack's top at each MARK */
    size_t nmarks;
    size_t height;     /* the most values the scanner saw on the stack at once */
    size_t memo_count; /* memo slots filled, for MEMOIZE */
    const char *err;
};

static int dec_fail(struct dec *d, const char *err)
{
    d->err = err;
    return -1;
}

/* Lua tables cannot have a nil or NaN key; None is luasock.null here, and refused the same. */
static bool key_ok(lua_State *L, int idx)
{
    if (lvalues_kind(L, idx) == LV_NULL)
        return false;
    if (lua_type(L, idx) == LUA_TNUMBER && !lua_isinteger(L, idx)) {
        lua_Number n = lua_tonumber(L, idx);
        return n == n;
    }
    return true;
}

static void append_items(lua_State *L, int t, int from, int to)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    for (int i = from; i <= to; i++) {
        lua_pushvalue(L, i);
        lua_rawseti(L, t, ++n);
    }
}

/* Keys and values alternate in from..to; set members (values NULL) are keys with value true. */
static int add_entries(lua_State *L, struct dec *d, int t, int from, int to, bool set)
{
    for (int i = from; i <= to; i += set ? 1 : 2) {
        if (!key_ok(L, i))
            return dec_fail(d, ERR_BAD_KEY);
        lua_pushvalue(L, i);
        if (set)
            lua_pushboolean(L, 1);
        else
            lua_pushvalue(L, i + 1);
        lua_rawset(L, t);
    }
    return 0;
}

/* A new table, marked in exact mode. */
static void new_table(lua_State *L, struct dec *d, enum lvalue_kind kind, int narr, int nrec)
{
    lua_createtable(L, narr, nrec);
    if (d->exact)
        lvalues_mark(L, -1, kind);
}

/* LIST, TUPLE*, DICT, FROZENSET: a container of the values from first to the top, which it
 * replaces. */
static int build(lua_State *L, struct dec *d, unsigned char code, int first)
{
    int top = lua_gettop(L), n = top - first + 1, t = top + 1;
    if (code == 'd' || code == 0x91) {
        new_table(L, d, code == 'd' ? LV_MAP : LV_SET, 0, code == 'd' ? n / 2 : n);
        if (add_entries(L, d, t, first, top, code == 0x91) != 0)
            return -1;
    } else {
        new_table(L, d, code == 'l' ? LV_ARRAY : LV_TUPLE, n, 0);
        append_items(L, t, first, top);
    }
    lua_copy(L, t, first);
    lua_settop(L, first);
    return 0;
}

/* APPEND(S), SETITEM(S), ADDITEMS: adds the values above the container at t to it. */
static int add_to_table(lua_State *L, struct dec *d, unsigned char code, int t)
{
    int top = lua_gettop(L), rc = 0;
    if (code == 'a' || code == 'e')
        append_items(L, t, t + 1, top);
    else
        rc = add_entries(L, d, t, t + 1, top, code == 0x90);
    lua_settop(L, t);
    return rc;
}

static int push_int(lua_State *L, struct dec *d, const struct op *op)
{
    int64_t v;
    bool high;
    if (op->code == 'I' && op->arg_len == 2 && op->arg[0] == '0' && op->arg[1] <= '1') {
        lua_pushboolean(L, op->arg[1] == '1');
        return 0;
    }
    parse_int(op, &v, &high);
    if (!high)
        lua_pushinteger(L, (lua_Integer)v);
    else if (d->exact)
        lvalues_push_uint64(L, (uint64_t)v);
    else
        return dec_fail(d, ERR_RANGE);
    return 0;
}

static void push_raw_unicode(lua_State *L, const struct op *op)
{
    luaL_Buffer b;
    size_t i = 0, run = 0;
    luaL_buffinit(L, &b);
    while (i < op->arg_len) {
        char utf8[4];
        long cp = raw_unicode_char(op->arg, op->arg_len, &i, &run);
        luaL_addlstring(&b, utf8, utf8_put((unsigned long)cp, utf8));
    }
    luaL_pushresult(&b);
}

static void push_binfloat(lua_State *L, const unsigned char *p)
{
    uint64_t bits = 0;
    double f;
    for (int i = 0; i < 8; i++)
        bits = bits << 8 | p[i];
    memcpy(&f, &bits, sizeof f);
    lua_pushnumber(L, f);
}

static void memo_store(lua_State *L, struct dec *d, uint32_t key)
{
    if (lua_rawgeti(L, MEMO_INDEX, key) == LUA_TNIL)
        d->memo_count++;
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, MEMO_INDEX, key);
}

static int decode_scalar(lua_State *L, struct dec *d, const struct op *op)
{
    double f;
    switch (op->code) {
    case 'N':
        lvalues_push_null(L);
        return 0;
    case 0x88:
    case 0x89:
        lua_pushboolean(L, op->code == 0x88);
        return 0;
    case 'J':
        lua_pushinteger(L, (int32_t)(uint32_t)read_le(op->arg, 4));
        return 0;
    case 'K':
    case 'M':
        lua_pushinteger(L, (lua_Integer)read_le(op->arg, op->arg_len));
        return 0;
    case 'F':
        parse_float(op, &f);
        lua_pushnumber(L, f);
        return 0;
    case 'G':
        push_binfloat(L, op->arg);
        return 0;
    case 'V':
        push_raw_unicode(L, op);
        return 0;
    case 'B':
    case 'C':
    case 0x8e:
    case 0x96:
        if (d->exact)
            lvalues_push_bytes(L, (const char *)op->arg, op->arg_len);
        else
            lua_pushlstring(L, (const char *)op->arg, op->arg_len);
        return 0;
    case 'T':
    case 'U':
    case 'X':
    case 0x8c:
    case 0x8d:
        lua_pushlstring(L, (const char *)op->arg, op->arg_len);
        return 0;
    default: /* INT, LONG, LONG1, LONG4 */
        return push_int(L, d, op);
    }
}

static int decode_op(lua_State *L, struct dec *d, const struct op *op)
{
    int top = lua_gettop(L);
    int base = d->nmarks ? d->marks[d->nmarks - 1] : MEMO_INDEX;
    uint32_t key;
    switch (op->code) {
    case '(':
        d->marks[d->nmarks++] = top;
        return 0;
    case '0':
        if (top > base)
            lua_pop(L, 1);
        else
            d->nmarks--;
        return 0;
    case '1':
        lua_settop(L, d->marks[--d->nmarks]);
        return 0;
    case '2':
        lua_pushvalue(L, -1);
        return 0;
    case 0x80:
    case 0x95:
        return 0;
    case ']':
    case '}':
    case 0x8f:
    case ')':
        new_table(L, d, op->code == ']' ? LV_ARRAY : op->code == '}' ? LV_MAP
                        : op->code == 0x8f ? LV_SET : LV_TUPLE, 0, 0);
        return 0;
    case 'p': case 'q': case 'r': case 0x94:
        if (op->code == 0x94)
            key = (uint32_t)d->memo_count;
        else
            parse_memo_key(op, &key);
        memo_store(L, d, key);
        return 0;
    case 'g': case 'h': case 'j':
        parse_memo_key(op, &key);
        lua_rawgeti(L, MEMO_INDEX, key);
        return 0;
    case 'l': case 't': case 'd': case 0x91:
        return build(L, d, op->code, d->marks[--d->nmarks] + 1);
    case 0x85: case 0x86: case 0x87:
        return build(L, d, 't', top - (op->code - 0x84) + 1);
    case 'a':
        return add_to_table(L, d, 'a', top - 1);
    case 's':
        return add_to_table(L, d, 's', top - 2);
    case 'e': case 'u': case 0x90:
        return add_to_table(L, d, op->code, d->marks[--d->nmarks]);
    default:
        return decode_scalar(L, d, op);
    }
}

/* Runs protected (see pickle_decode): 1 is the struct dec, 2 the memo, the pickle's stack above.
 * Returns the value, or nothing with d->err set. */
static int decode_run(lua_State *L)
{
    struct dec *d = lua_touserdata(L, 1);
    lua_newtable(L);
    /* Building a container pushes a table and a key and value at most; a text, a buffer. */
    if (d->height > INT_MAX / 2 || !lua_checkstack(L, (int)d->height + 8)) {
        d->err = CODEC_ERR_TOO_MANY_ITEMS;
        return 0;
    }
    size_t pos = 0, seen = 0;
    for (;;) {
        struct op op;
        const char *err;
        op_read(d->data, d->len, pos, SIZE_MAX, &seen, &op, &err);
        pos = op.end;
        if (op.code == '.')
            break;
        if (decode_op(L, d, &op) != 0)
            return 0;
    }
    if (lvalues_kind(L, -1) == LV_NULL)
        lua_pushnil(L);
    return 1;
}

enum codec_status pickle_decode(lua_State *L, const char *data, size_t len, bool exact,
                                const char **err)
{
    /* Scanning first checks everything, without limits: a truncated pickle reads as one. */
    struct codec_limits none = {SIZE_MAX, INT_MAX, SIZE_MAX};
    struct pickle_scanner s;
    size_t n = 0;
    pickle_scanner_init(&s);
    enum codec_status st = pickle_scan(&s, data, len, &none, &n, err);
    struct dec d = {.data = (const unsigned char *)data, .len = len, .exact = exact,
                    .height = s.max_height};
    size_t marks = s.max_marks;
    pickle_scanner_release(&s);
    if (st != CODEC_OK || n != len) {
        if (st != CODEC_ERROR)
            *err = st == CODEC_MORE ? ERR_TRUNCATED : ERR_TRAILING;
        return CODEC_ERROR;
    }
    d.marks = malloc((marks + 1) * sizeof *d.marks);
    if (d.marks == NULL || !lua_checkstack(L, 2)) {
        free(d.marks);
        *err = ERR_NO_MEMORY;
        return CODEC_ERROR;
    }
    /* Building runs protected, so that a memory error in Lua (the handler's memory cap) frees
     * the marks before it is raised again. */
    lua_pushcfunction(L, decode_run);
    lua_pushlightuserdata(L, &d);
    int status = lua_pcall(L, 1, 1, 0);
    free(d.marks);
    if (status != LUA_OK)
        lua_error(L);
    if (d.err != NULL) {
        lua_pop(L, 1);
        *err = d.err;
        return CODEC_ERROR;
    }
    return CODEC_OK;
}

/* ---- Encoding ---- */

struct enc {
    lua_State *L;
    struct buf *out;
    size_t start; /* bytes in out before this pickle */
    size_t max_size;
    int max_depth;
    struct table_path path; /* the tables being encoded: meeting one again is a cycle */
    const char *err;
};

static int enc_fail(struct enc *e, const char *err)
{
    e->err = err;
    return -1;
}

static int put(struct enc *e, const void *bytes, size_t n)
{
    if (n > e->max_size - (buf_len(e->out) - e->start))
        return enc_fail(e, ERR_TOO_LARGE);
    if (buf_append(e->out, bytes, n) != 0)
        return enc_fail(e, errno == ENOBUFS ? ERR_NO_BUFFERS : ERR_NO_MEMORY);
    return 0;
}

/* An opcode and an n-byte little-endian argument (n <= 8). */
static int put_op(struct enc *e, unsigned char code, uint64_t arg, size_t n)
{
    unsigned char b[9] = {code};
    for (size_t i = 0; i < n; i++)
        b[1 + i] = (unsigned char)(arg >> (8 * i));
    return put(e, b, 1 + n);
}

/* Ints as Python's pickler writes them: BININT1, BININT2, BININT, else LONG1 with the fewest
 * two's complement bytes. */
static int put_int(struct enc *e, int64_t v)
{
    if (v >= 0 && v <= 0xff)
        return put_op(e, 'K', (uint64_t)v, 1);
    if (v >= 0 && v <= 0xffff)
        return put_op(e, 'M', (uint64_t)v, 2);
    if (v >= INT32_MIN && v <= INT32_MAX)
        return put_op(e, 'J', (uint64_t)v, 4);
    unsigned char b[10] = {0x8a, 8};
    size_t n = 8;
    for (size_t i = 0; i < 8; i++)
        b[2 + i] = (unsigned char)((uint64_t)v >> (8 * i));
    while (n > 1 && b[1 + n] == (v < 0 ? 0xff : 0x00)
           && ((b[n] ^ (v < 0 ? 0xff : 0x00)) & 0x80) == 0)
        n--;
    b[1] = (unsigned char)n;
    return put(e, b, 2 + n);
}

static int put_uint64(struct enc *e, uint64_t u)
{
    if (u <= (uint64_t)INT64_MAX)
        return put_int(e, (int64_t)u);
    unsigned char b[11] = {0x8a, 9};
    for (size_t i = 0; i < 8; i++)
        b[2 + i] = (unsigned char)(u >> (8 * i));
    return put(e, b, sizeof b); /* the ninth byte, 0, keeps it positive */
}

static int put_float(struct enc *e, double f)
{
    uint64_t bits;
    unsigned char b[9] = {'G'};
    memcpy(&bits, &f, sizeof bits);
    for (int i = 0; i < 8; i++)
        b[1 + i] = (unsigned char)(bits >> (56 - 8 * i));
    return put(e, b, sizeof b);
}

/* str or bytes: the opcode with a 1-, 4- or 8-byte length, as short as the length allows. */
static int put_sized(struct enc *e, const unsigned char codes[3], const char *s, size_t len)
{
    if (len > e->max_size)
        return enc_fail(e, ERR_TOO_LARGE);
    int rc = len <= 0xff         ? put_op(e, codes[0], len, 1)
             : len <= 0xffffffff ? put_op(e, codes[1], len, 4)
                                 : put_op(e, codes[2], len, 8);
    return rc != 0 ? rc : put(e, s, len);
}

static const unsigned char str_codes[3] = {0x8c, 'X', 0x8d};
static const unsigned char bytes_codes[3] = {'C', 'B', 0x8e};

static int encode_string(struct enc *e, int idx)
{
    size_t len;
    const char *s = lua_tolstring(e->L, idx, &len);
    if (len > e->max_size)
        return enc_fail(e, ERR_TOO_LARGE);
    return put_sized(e, utf8_valid(s, len) ? str_codes : bytes_codes, s,
                     len);
}

static int encode_value(struct enc *e, int idx, int depth);

/* Python needs dict keys and set members hashable: of tables, only tuples, bytes and uint64. */
static int encode_key(struct enc *e, int idx, int depth)
{
    enum lvalue_kind kind = lvalues_kind(e->L, idx);
    if (lua_istable(e->L, idx) && kind != LV_TUPLE && kind != LV_BYTES && kind != LV_UINT64)
        return enc_fail(e, "pickle: a dict key or set member cannot be a table (but a tuple)");
    return encode_value(e, idx, depth);
}

static int encode_items(struct enc *e, int idx, lua_Integer n, int depth)
{
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(e->L, idx, i);
        if (encode_value(e, lua_gettop(e->L), depth) != 0)
            return -1;
        lua_pop(e->L, 1);
    }
    return 0;
}

/* A dict's keys and values, or a set's members (its keys). */
static int encode_entries(struct enc *e, int idx, int depth, bool set)
{
    lua_State *L = e->L;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int top = lua_gettop(L);
        if (encode_key(e, top - 1, depth) != 0 || (!set && encode_value(e, top, depth) != 0))
            return -1;
        lua_pop(L, 1);
    }
    return 0;
}

/* As codec.c's: n if the keys of the table at idx are exactly 1..n, else 0. */
/* A container is its empty form, then MARK, the entries, and the opcode that adds them. */
static int encode_container(struct enc *e, int idx, int depth, enum lvalue_kind kind)
{
    lua_Integer n = 0;
    if (kind == LV_OTHER) {
        size_t count;
        n = table_sequence_length(e->L, idx, &count);
        kind = n > 0 ? LV_ARRAY : LV_MAP;
    } else if (kind == LV_ARRAY || kind == LV_TUPLE) {
        n = (lua_Integer)lua_rawlen(e->L, idx);
    }
    static const unsigned char empty[] = {[LV_ARRAY] = ']', [LV_MAP] = '}', [LV_SET] = 0x8f};
    static const unsigned char add[] = {[LV_ARRAY] = 'e', [LV_MAP] = 'u', [LV_SET] = 0x90,
                                        [LV_TUPLE] = 't'};
    if (kind != LV_TUPLE && put_op(e, empty[kind], 0, 0) != 0)
        return -1;
    if (put_op(e, '(', 0, 0) != 0)
        return -1;
    int rc = kind == LV_ARRAY || kind == LV_TUPLE ? encode_items(e, idx, n, depth)
                                                  : encode_entries(e, idx, depth, kind == LV_SET);
    return rc != 0 ? rc : put_op(e, add[kind], 0, 0);
}

/* Encodes the table at idx, which has depth containers around its entries (itself included). */
static int encode_table(struct enc *e, int idx, int depth, enum lvalue_kind kind)
{
    if (depth > e->max_depth)
        return enc_fail(e, ERR_TOO_DEEP);
    if (!lua_checkstack(e->L, 2))
        return enc_fail(e, ERR_TOO_DEEP);
    if (!table_path_enter(&e->path, e->L, idx))
        return enc_fail(e, "cycle in table");
    int rc = encode_container(e, idx, depth, kind);
    table_path_leave(&e->path);
    return rc;
}

static int encode_value(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    enum lvalue_kind kind = lvalues_kind(L, idx);
    size_t len;
    const char *s;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return put_op(e, 'N', 0, 0);
    case LUA_TBOOLEAN:
        return put_op(e, lua_toboolean(L, idx) ? 0x88 : 0x89, 0, 0);
    case LUA_TNUMBER:
        return lua_isinteger(L, idx) ? put_int(e, lua_tointeger(L, idx))
                                     : put_float(e, lua_tonumber(L, idx));
    case LUA_TSTRING:
        return encode_string(e, idx);
    case LUA_TTABLE:
        if (kind == LV_BYTES) {
            s = lvalues_bytes(L, idx, &len);
            return put_sized(e, bytes_codes, s, len);
        }
        if (kind == LV_UINT64)
            return put_uint64(e, lvalues_uint64(L, idx));
        if (kind == LV_EXT)
            return enc_fail(e, "pickle: cannot encode a luasock.ext value");
        return encode_table(e, idx, depth + 1, kind);
    case LUA_TLIGHTUSERDATA:
        if (kind == LV_NULL)
            return put_op(e, 'N', 0, 0);
        return enc_fail(e, "cannot encode a userdata");
    case LUA_TFUNCTION:
        return enc_fail(e, "cannot encode a function");
    case LUA_TTHREAD:
        return enc_fail(e, "cannot encode a thread");
    default:
        return enc_fail(e, "cannot encode a userdata");
    }
}

enum codec_status pickle_encode(lua_State *L, int idx, struct buf *out,
                                const struct codec_limits *limits, const char **err)
{
    struct enc e = {.L = L, .out = out, .start = buf_len(out), .max_size = limits->max_size,
                    .max_depth = limits->max_depth};
    if (table_path_init(&e.path, e.max_depth) < 0) {
        *err = ERR_NO_MEMORY;
        return CODEC_ERROR;
    }
    int top = lua_gettop(L);
    idx = lua_absindex(L, idx);
    /* PROTO 4, the value, STOP. Python's FRAMEs are an optimisation for its reader: left out. */
    int rc = put_op(&e, 0x80, 4, 1);
    if (rc == 0)
        rc = encode_value(&e, idx, 0);
    if (rc == 0)
        rc = put_op(&e, '.', 0, 0);
    table_path_free(&e.path);
    lua_settop(L, top);
    if (rc == 0)
        return CODEC_OK;
    buf_truncate(out, e.start);
    *err = e.err;
    return CODEC_ERROR;
}
