/*
 * test_burst.c - the HTTP host's burst of a loop turn's responses (src/host/evhttp/burst.h):
 * one call sends each buffer to its own socket, a full socket is reported and
 * never waited for, a closed peer is an error and no signal, a buffer of more
 * chains than one send takes goes in part, and more items than the ring's
 * depth go in several calls. Skipped where the kernel offers no io_uring.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "host/evhttp/burst.h"

typedef struct pair {
    int ours, theirs; /* ours: non-blocking, the one the burst sends on */
} pair;

static void pair_open(pair *p)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK), 0);
    p->ours = sv[0];
    p->theirs = sv[1];
}

static void pair_close(pair *p)
{
    close(p->ours);
    if (p->theirs >= 0)
        close(p->theirs);
}

/* Reads what arrived on theirs, without waiting (a burst never leaves a send pending). */
static size_t drain_received(pair *p, char *buf, size_t cap)
{
    size_t len = 0;
    ssize_t n;
    while (len < cap && (n = recv(p->theirs, buf + len, cap - len, MSG_DONTWAIT)) > 0)
        len += (size_t)n;
    return len;
}

static kp_burst *new_burst_or_skip(unsigned depth)
{
    kp_burst *b = kp_burst_new(depth);
    if (!b)
        skip(); /* no io_uring here: the host writes each response itself */
    return b;
}

static void test_each_buffer_goes_to_its_socket(void **state)
{
    (void)state;
    enum { N = 5 };
    kp_burst *b = new_burst_or_skip(8);
    pair p[N];
    kp_burst_item items[N];
    for (int i = 0; i < N; i++) {
        pair_open(&p[i]);
        items[i].out = evbuffer_new();
        items[i].fd = p[i].ours;
        evbuffer_add_printf(items[i].out, "response %d", i);
        evbuffer_add_printf(items[i].out, ", second chain of %d", i); /* may share a chain: either way */
    }
    assert_int_equal(kp_burst_send(b, items, N), 0);
    for (int i = 0; i < N; i++) {
        char want[64], got[64];
        int len = snprintf(want, sizeof want, "response %d, second chain of %d", i, i);
        assert_int_equal(items[i].sent, len);
        assert_int_equal(drain_received(&p[i], got, sizeof got), (size_t)len);
        assert_memory_equal(got, want, (size_t)len);
        assert_int_equal(evbuffer_get_length(items[i].out), (size_t)len); /* the caller drains */
        evbuffer_free(items[i].out);
        pair_close(&p[i]);
    }
    kp_burst_free(b);
}

static void test_a_full_socket_is_reported_not_waited_for(void **state)
{
    (void)state;
    kp_burst *b = new_burst_or_skip(4);
    pair full, free_one;
    pair_open(&full);
    pair_open(&free_one);
    char chunk[4096];
    memset(chunk, 'x', sizeof chunk);
    while (send(full.ours, chunk, sizeof chunk, MSG_DONTWAIT) > 0) {
    }
    assert_int_equal(errno, EAGAIN);

    kp_burst_item items[2] = {{.out = evbuffer_new(), .fd = full.ours}, {.out = evbuffer_new(), .fd = free_one.ours}};
    evbuffer_add(items[0].out, "more", 4);
    evbuffer_add(items[1].out, "hello", 5);
    assert_int_equal(kp_burst_send(b, items, 2), 0);
    assert_int_equal(items[0].sent, -EAGAIN);
    assert_int_equal(items[1].sent, 5);
    char got[8];
    assert_int_equal(drain_received(&free_one, got, sizeof got), 5);
    assert_memory_equal(got, "hello", 5);
    for (int i = 0; i < 2; i++)
        evbuffer_free(items[i].out);
    pair_close(&full);
    pair_close(&free_one);
    kp_burst_free(b);
}

static void test_a_closed_peer_is_an_error_not_a_signal(void **state)
{
    (void)state;
    kp_burst *b = new_burst_or_skip(4);
    pair gone, live;
    pair_open(&gone);
    pair_open(&live);
    close(gone.theirs);
    gone.theirs = -1;
    kp_burst_item items[2] = {{.out = evbuffer_new(), .fd = gone.ours}, {.out = evbuffer_new(), .fd = live.ours}};
    evbuffer_add(items[0].out, "lost", 4);
    evbuffer_add(items[1].out, "kept", 4);
    assert_int_equal(kp_burst_send(b, items, 2), 0); /* SIGPIPE's default would have ended the test */
    assert_int_equal(items[0].sent, -EPIPE);
    assert_int_equal(items[1].sent, 4);
    for (int i = 0; i < 2; i++)
        evbuffer_free(items[i].out);
    pair_close(&gone);
    pair_close(&live);
    kp_burst_free(b);
}

/* evbuffer_add_reference makes a chain of each piece: one send takes the first KP_BURST_MAX_IOV. */
static void test_many_chains_go_in_part(void **state)
{
    (void)state;
    enum { PIECES = KP_BURST_MAX_IOV + 4 };
    static const char piece[] = "0123456789";
    kp_burst *b = new_burst_or_skip(2);
    pair p;
    pair_open(&p);
    kp_burst_item item = {.out = evbuffer_new(), .fd = p.ours};
    for (int i = 0; i < PIECES; i++)
        evbuffer_add_reference(item.out, piece, 10, NULL, NULL);
    assert_int_equal(kp_burst_send(b, &item, 1), 0);
    assert_int_equal(item.sent, KP_BURST_MAX_IOV * 10);
    char got[PIECES * 10];
    assert_int_equal(drain_received(&p, got, sizeof got), (size_t)(KP_BURST_MAX_IOV * 10));
    evbuffer_free(item.out);
    pair_close(&p);
    kp_burst_free(b);
}

static void test_more_items_than_the_depth_take_several_calls(void **state)
{
    (void)state;
    enum { N = 7 };
    kp_burst *b = new_burst_or_skip(2);
    pair p[N];
    kp_burst_item items[N + 1];
    for (int i = 0; i < N; i++) {
        pair_open(&p[i]);
        items[i].out = evbuffer_new();
        items[i].fd = p[i].ours;
        evbuffer_add_printf(items[i].out, "#%d", i);
    }
    items[N].out = evbuffer_new(); /* nothing to send: sent 0, no system call for it */
    items[N].fd = -1;
    assert_int_equal(kp_burst_send(b, items, N + 1), 0);
    for (int i = 0; i < N; i++) {
        char want[8], got[8];
        int len = snprintf(want, sizeof want, "#%d", i);
        assert_int_equal(items[i].sent, len);
        assert_int_equal(drain_received(&p[i], got, sizeof got), (size_t)len);
        assert_memory_equal(got, want, (size_t)len);
        evbuffer_free(items[i].out);
        pair_close(&p[i]);
    }
    assert_int_equal(items[N].sent, 0);
    evbuffer_free(items[N].out);
    kp_burst_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_buffer_goes_to_its_socket),
        cmocka_unit_test(test_a_full_socket_is_reported_not_waited_for),
        cmocka_unit_test(test_a_closed_peer_is_an_error_not_a_signal),
        cmocka_unit_test(test_many_chains_go_in_part),
        cmocka_unit_test(test_more_items_than_the_depth_take_several_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
