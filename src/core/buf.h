/*
 * buf.h - the one growable byte buffer every built string goes through.
 *
 * A kp_buf is always NUL-terminated after any successful append (data[len] ==
 * '\0') so it can be used as a C string. The owner calls kp_buf_free(). A
 * zero-initialised kp_buf (KP_BUF_INIT) is a valid empty buffer.
 */
#ifndef KP_BUF_H
#define KP_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct kp_buf {
    char *data;
    size_t len;
    size_t cap;
} kp_buf;

#define KP_BUF_INIT                                                                                                    \
    {                                                                                                                  \
        NULL, 0, 0                                                                                                     \
    }

/* Appends n bytes; returns 0, or -1 on allocation failure (buffer unchanged). */
int kp_buf_append(kp_buf *b, const void *data, size_t n);
/* Appends a C string. */
int kp_buf_puts(kp_buf *b, const char *s);
/* Appends printf-formatted text. */
int kp_buf_printf(kp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int kp_buf_vprintf(kp_buf *b, const char *fmt, va_list ap);
/* Makes sure at least n more bytes fit without reallocating. */
int kp_buf_reserve(kp_buf *b, size_t n);
/* Drops the first n bytes (n <= len). */
void kp_buf_consume(kp_buf *b, size_t n);
/* Empties the buffer, keeping its memory. */
void kp_buf_reset(kp_buf *b);
/* Returns the contents as a C string ("" when empty); valid until the next change. */
const char *kp_buf_cstr(const kp_buf *b);
/* Hands the heap string to the caller (who frees it with free()); b becomes empty. */
char *kp_buf_steal(kp_buf *b);
/* Frees the memory; b becomes empty. */
void kp_buf_free(kp_buf *b);

#endif
