/*
 * test_replay.c - replays of ended versions (gen/replay.h): a pulled stream
 * sends the persisted events as SSE frames in pieces of at most
 * KP_REPLAY_PIECE bytes, each only when asked (more), starting after
 * Last-Event-ID; one rendering serves every reader of a version (a second
 * reader does not read the database); a rendering evicted from the cache
 * lives on for the readers that hold it; a generating version is refused
 * (KP_ECONFLICT) and an unknown one is not found.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "gen/replay.h"
#include "testutil.h"

typedef struct fixture {
    char dir[64];
    char db[128];
    kp_store *s;
    kp_replay_cache *cache;
    char *events; /* the persisted events of prj_big v1 */
} fixture;

/* A sink that records what it is given. */
typedef struct rec_sink {
    kp_sink sink;
    kp_buf got;
    size_t writes, largest;
    int ended;
} rec_sink;

static int rec_write(kp_sink *s, const char *data, size_t len)
{
    rec_sink *r = (rec_sink *)s;
    r->writes++;
    if (len > r->largest)
        r->largest = len;
    return kp_buf_append(&r->got, data, len);
}

static void rec_end(kp_sink *s)
{
    ((rec_sink *)s)->ended = 1;
}

/* Creates project id with version 1 ended as ready (events_json NULL: generating). */
static void make_version(kp_store *s, const char *id, const char *events_json)
{
    kp_project p;
    kp_version v;
    kp_err err = {0};
    memset(&p, 0, sizeof p);
    memset(&v, 0, sizeof v);
    snprintf(p.id, sizeof p.id, "%s", id);
    snprintf(p.user_id, sizeof p.user_id, "usr_r");
    snprintf(p.name, sizeof p.name, "An app");
    p.latest_version = 1;
    p.created_at = p.updated_at = 1000;
    snprintf(v.project_id, sizeof v.project_id, "%s", id);
    v.n = 1;
    v.status = KP_VER_GENERATING;
    v.prompt = "make it";
    v.created_at = v.updated_at = 1000;
    assert_int_equal(s->ops->project_create(s, &p, &v, &err), KP_OK);
    if (!events_json)
        return;
    v.status = KP_VER_READY;
    v.prompt = NULL;
    v.events_json = (char *)events_json;
    v.files_json = "[]";
    assert_int_equal(s->ops->version_finish(s, &v, &err), KP_OK);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    kp_err err = {0};
    kp_buf ev = KP_BUF_INIT;
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->db, sizeof f->db);
    kp_test_user(f->s, "usr_r", "r@example.com", "free");
    /* a project event, a 200 KB delta, a file, done */
    char *big = malloc(200 * 1024 + 1);
    memset(big, 'a', 200 * 1024);
    big[200 * 1024] = '\0';
    kp_buf_printf(&ev,
                  "[{\"id\":1,\"event\":\"project\",\"data\":{\"project_id\":\"prj_big\",\"version\":1}},"
                  "{\"id\":2,\"event\":\"delta\",\"data\":{\"text\":\"%s\"}},"
                  "{\"id\":3,\"event\":\"file\",\"data\":{\"path\":\"index.html\",\"bytes\":5}},"
                  "{\"id\":4,\"event\":\"done\",\"data\":{\"version\":1}}]",
                  big);
    free(big);
    f->events = kp_buf_steal(&ev);
    make_version(f->s, "prj_big", f->events);
    assert_int_equal(kp_replay_cache_new(KP_REPLAY_CACHE_BYTES, KP_REPLAY_CACHE_ENTRIES, &f->cache, &err), KP_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    kp_replay_cache_free(f->cache);
    f->s->ops->close(f->s);
    kp_test_rmrf(f->dir);
    free(f->events);
    free(f);
    return 0;
}

/* Pulls a stream to its end the way a host does: start, then more() until end. */
static void pull(kp_stream *st, rec_sink *r)
{
    memset(r, 0, sizeof *r);
    r->sink.write = rec_write;
    r->sink.end = rec_end;
    st->start(st, &r->sink);
    for (int i = 0; i < 10000 && !r->ended; i++) {
        size_t before = r->writes;
        st->more(st, &r->sink);
        assert_true(r->ended || r->writes == before + 1); /* one piece per call */
    }
    assert_true(r->ended);
    st->release(st);
}

static void test_pieces_after_last_event_id(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_stream *st = NULL;
    rec_sink r;
    for (int64_t after = 0; after <= 4; after++) {
        kp_buf want = KP_BUF_INIT;
        assert_int_equal(kp_replay_render(f->events, after, &want), 0);
        assert_int_equal(kp_replay_open(f->cache, f->s, "prj_big", 1, after, &st, &err), KP_OK);
        pull(st, &r);
        assert_int_equal(r.got.len, want.len);
        if (want.len)
            assert_memory_equal(r.got.data, want.data, want.len);
        assert_true(r.largest <= KP_REPLAY_PIECE);
        if (after == 0)
            assert_true(r.writes >= 4); /* 200 KB in 64 KiB pieces */
        kp_buf_free(&want);
        kp_buf_free(&r.got);
    }
}

static void test_one_rendering_for_every_reader(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_stream *a = NULL, *b = NULL;
    rec_sink ra, rb;
    assert_int_equal(kp_replay_open(f->cache, f->s, "prj_big", 1, 0, &a, &err), KP_OK);
    /* the row goes away: the second reader is served from the shared rendering */
    assert_int_equal(f->s->ops->project_delete(f->s, "prj_big", &err), KP_OK);
    assert_int_equal(kp_replay_open(f->cache, f->s, "prj_big", 1, 0, &b, &err), KP_OK);
    assert_int_equal(kp_replay_cache_entries(f->cache), 1);
    pull(a, &ra);
    pull(b, &rb);
    assert_int_equal(ra.got.len, rb.got.len);
    assert_true(ra.got.len > 200 * 1024);
    kp_buf_free(&ra.got);
    kp_buf_free(&rb.got);
}

/* A cache of the given budget, and a one-event version prj_small beside prj_big. */
static kp_replay_cache *small_cache(fixture *f, size_t max_bytes, size_t max_entries)
{
    kp_err err = {0};
    kp_replay_cache *c = NULL;
    make_version(f->s, "prj_small", "[{\"id\":1,\"event\":\"done\",\"data\":{}}]");
    assert_int_equal(kp_replay_cache_new(max_bytes, max_entries, &c, &err), KP_OK);
    return c;
}

/* Pulls a (prj_big) and b (prj_small) to their ends and checks both whole. */
static void pull_big_and_small(kp_stream *a, kp_stream *b)
{
    rec_sink ra, rb;
    pull(a, &ra);
    pull(b, &rb);
    assert_true(ra.got.len > 200 * 1024);
    assert_string_equal(rb.got.data, "id: 1\nevent: done\ndata: {}\n\n");
    kp_buf_free(&ra.got);
    kp_buf_free(&rb.got);
}

static void test_evicted_rendering_lives_for_its_readers(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_replay_cache *small = small_cache(f, KP_REPLAY_CACHE_BYTES, 1);
    kp_stream *a = NULL, *b = NULL;
    assert_int_equal(kp_replay_open(small, f->s, "prj_big", 1, 0, &a, &err), KP_OK);
    assert_int_equal(kp_replay_open(small, f->s, "prj_small", 1, 0, &b, &err), KP_OK);
    assert_int_equal(kp_replay_cache_entries(small), 1);
    kp_replay_cache_free(small); /* the streams still hold their renderings */
    pull_big_and_small(a, b);
}

/* A rendering larger than the whole byte budget is served, not cached, and
 * makes room by evicting the others. */
static void test_rendering_over_budget_is_served_uncached(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_replay_cache *small = small_cache(f, 1024, 4);
    kp_stream *a = NULL, *b = NULL;
    assert_int_equal(kp_replay_open(small, f->s, "prj_small", 1, 0, &b, &err), KP_OK);
    assert_int_equal(kp_replay_cache_entries(small), 1);
    assert_int_equal(kp_replay_open(small, f->s, "prj_big", 1, 0, &a, &err), KP_OK);
    assert_int_equal(kp_replay_cache_entries(small), 0);
    pull_big_and_small(a, b);
    kp_replay_cache_free(small);
}

static void test_generating_and_unknown_versions(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_stream *st = NULL;
    make_version(f->s, "prj_gen", NULL);
    assert_int_equal(kp_replay_open(f->cache, f->s, "prj_gen", 1, 0, &st, &err), KP_ECONFLICT);
    assert_null(st);
    assert_int_equal(kp_replay_open(f->cache, f->s, "prj_none", 1, 0, &st, &err), KP_ENOTFOUND);
    assert_int_equal(kp_replay_open(f->cache, f->s, "prj_big", 2, 0, &st, &err), KP_ENOTFOUND);
    assert_int_equal(kp_replay_cache_entries(f->cache), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pieces_after_last_event_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_rendering_for_every_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evicted_rendering_lives_for_its_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rendering_over_budget_is_served_uncached, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generating_and_unknown_versions, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
