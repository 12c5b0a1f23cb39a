/*
 * test_plans.c - plan rules (domain/plans.c) on a real SQLite database: valid
 * ids, what a new plan needs, partial updates that keep the other fields,
 * ranges and types, unknown fields, and an id in the body that must agree
 * with the URL. A refused edit never changes the stored plan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/log.h"
#include "domain/plans.h"
#include "testutil.h"

typedef struct fixture {
    char dir[256];
    char db[512];
    kp_store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->db, sizeof f->db);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    f->s->ops->close(f->s);
    kp_test_rmrf(f->dir);
    free(f);
    return 0;
}

/* Parses a JSON object literal for an edit. */
static json_t *edit(const char *text)
{
    json_error_t jerr;
    json_t *e = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!e)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    return e;
}

static kp_status put(fixture *f, const char *id, const char *text, kp_plan *out, int *created, kp_err *err)
{
    json_t *e = edit(text);
    kp_status rc = kp_plans_put(f->s, id, e, out, created, err);
    json_decref(e);
    return rc;
}

static void assert_plan_equal(const kp_plan *a, const kp_plan *b)
{
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->name, b->name);
    assert_int_equal(a->price_cents, b->price_cents);
    assert_string_equal(a->currency, b->currency);
    assert_int_equal(a->monthly_credits, b->monthly_credits);
    assert_int_equal(a->daily_bonus, b->daily_bonus);
    assert_int_equal(a->max_concurrent_generations, b->max_concurrent_generations);
    assert_string_equal(a->stripe_price_id, b->stripe_price_id);
    assert_int_equal(a->active, b->active);
    assert_int_equal(a->updated_at, b->updated_at);
}

/* Expects the edit to be refused with KP_EINVAL naming want, and the stored plan to be unchanged. */
static void expect_refused(fixture *f, const char *id, const char *text, const char *want)
{
    kp_plan before, after, out;
    kp_err err = {0};
    int created = -1;
    kp_status had = f->s->ops->plan_get(f->s, id, &before, &err);
    kp_err_clear(&err);
    kp_status rc = put(f, id, text, &out, &created, &err);
    if (rc != KP_EINVAL)
        fail_msg("%s on %s: expected KP_EINVAL, got %s (%s)", text, id, kp_status_name(rc), err.msg);
    assert_int_equal(err.status, KP_EINVAL);
    if (want && !strstr(err.msg, want))
        fail_msg("%s: message \"%s\" does not name \"%s\"", text, err.msg, want);
    kp_status has = f->s->ops->plan_get(f->s, id, &after, &err);
    assert_int_equal(has, had);
    if (had == KP_OK)
        assert_plan_equal(&before, &after);
}

#define FULL                                                                                                           \
    "\"name\":\"Team\",\"price_cents\":9900,\"monthly_credits\":500,\"daily_bonus\":10,"                               \
    "\"max_concurrent_generations\":5"

/* ---- ids ---- */

static void test_valid_ids(void **state)
{
    (void)state;
    assert_true(kp_plans_valid_id("free"));
    assert_true(kp_plans_valid_id("pro"));
    assert_true(kp_plans_valid_id("team_2026-eu"));
    assert_true(kp_plans_valid_id("0"));
    assert_true(kp_plans_valid_id("-"));
    char id[80];
    memset(id, 'a', 63);
    id[63] = '\0';
    assert_true(kp_plans_valid_id(id));
    id[63] = 'a';
    id[64] = '\0';
    assert_false(kp_plans_valid_id(id));

    assert_false(kp_plans_valid_id(""));
    assert_false(kp_plans_valid_id("Pro"));
    assert_false(kp_plans_valid_id("pro plan"));
    assert_false(kp_plans_valid_id("pro/plan"));
    assert_false(kp_plans_valid_id("pro.plan"));
    assert_false(kp_plans_valid_id("caf\xc3\xa9"));
    assert_false(kp_plans_valid_id("../etc"));
}

static void test_put_refuses_invalid_id(void **state)
{
    fixture *f = *state;
    kp_plan out;
    kp_err err = {0};
    int created = -1;
    assert_int_equal(put(f, "Team", "{" FULL "}", &out, &created, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "plan id"));
    assert_int_equal(f->s->ops->plan_get(f->s, "Team", &out, &err), KP_ENOTFOUND);
}

/* ---- create ---- */

static void test_create_with_all_fields(void **state)
{
    fixture *f = *state;
    kp_plan out, got;
    kp_err err = {0};
    int created = -1;
    assert_int_equal(put(f, "team", "{" FULL "}", &out, &created, &err), KP_OK);
    assert_int_equal(created, 1);
    assert_string_equal(out.id, "team");
    assert_string_equal(out.name, "Team");
    assert_int_equal(out.price_cents, 9900);
    assert_int_equal(out.monthly_credits, 500);
    assert_int_equal(out.daily_bonus, 10);
    assert_int_equal(out.max_concurrent_generations, 5);
    /* defaults for the optional fields */
    assert_string_equal(out.currency, "EUR");
    assert_string_equal(out.stripe_price_id, "");
    assert_int_equal(out.active, 1);
    assert_true(out.updated_at > 0);
    /* what came back is what is stored */
    assert_int_equal(f->s->ops->plan_get(f->s, "team", &got, &err), KP_OK);
    assert_string_equal(got.name, "Team");
    assert_int_equal(got.price_cents, 9900);
    assert_int_equal(got.max_concurrent_generations, 5);
    assert_int_equal(got.active, 1);
}

static void test_create_with_optional_fields(void **state)
{
    fixture *f = *state;
    kp_plan out;
    kp_err err = {0};
    int created = -1;
    assert_int_equal(put(f, "team-usd",
                         "{" FULL ",\"currency\":\"USD\",\"stripe_price_id\":\"price_123\",\"active\":false,"
                         "\"id\":\"team-usd\"}",
                         &out, &created, &err),
                     KP_OK);
    assert_int_equal(created, 1);
    assert_string_equal(out.currency, "USD");
    assert_string_equal(out.stripe_price_id, "price_123");
    assert_int_equal(out.active, 0);
    /* out and created may be NULL */
    assert_int_equal(put(f, "team-usd", "{\"active\":true}", NULL, &created, &err), KP_OK);
    assert_int_equal(created, 0);
}

static void test_create_requires_fields(void **state)
{
    fixture *f = *state;
    static const char *required[] = {"name", "price_cents", "monthly_credits", "daily_bonus",
                                     "max_concurrent_generations"};
    static const char *without[] = {
        "{\"price_cents\":9900,\"monthly_credits\":500,\"daily_bonus\":10,\"max_concurrent_generations\":5}",
        "{\"name\":\"Team\",\"monthly_credits\":500,\"daily_bonus\":10,\"max_concurrent_generations\":5}",
        "{\"name\":\"Team\",\"price_cents\":9900,\"daily_bonus\":10,\"max_concurrent_generations\":5}",
        "{\"name\":\"Team\",\"price_cents\":9900,\"monthly_credits\":500,\"max_concurrent_generations\":5}",
        "{\"name\":\"Team\",\"price_cents\":9900,\"monthly_credits\":500,\"daily_bonus\":10}",
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        expect_refused(f, "team", without[i], required[i]);
    expect_refused(f, "team", "{}", NULL);
    kp_plan p;
    kp_err err = {0};
    assert_int_equal(f->s->ops->plan_get(f->s, "team", &p, &err), KP_ENOTFOUND);
}

/* ---- update ---- */

static void test_partial_update_keeps_other_fields(void **state)
{
    fixture *f = *state;
    kp_plan before, out, got;
    kp_err err = {0};
    int created = -1;
    assert_int_equal(f->s->ops->plan_get(f->s, "pro", &before, &err), KP_OK);
    assert_int_equal(put(f, "pro", "{\"daily_bonus\":7}", &out, &created, &err), KP_OK);
    assert_int_equal(created, 0);
    assert_int_equal(f->s->ops->plan_get(f->s, "pro", &got, &err), KP_OK);
    assert_int_equal(got.daily_bonus, 7);
    assert_string_equal(got.name, before.name);
    assert_int_equal(got.price_cents, before.price_cents);
    assert_string_equal(got.currency, before.currency);
    assert_int_equal(got.monthly_credits, before.monthly_credits);
    assert_int_equal(got.max_concurrent_generations, before.max_concurrent_generations);
    assert_string_equal(got.stripe_price_id, before.stripe_price_id);
    assert_int_equal(got.active, before.active);
    assert_true(got.updated_at >= before.updated_at);

    /* an empty edit changes nothing but is fine */
    assert_int_equal(put(f, "pro", "{}", &out, &created, &err), KP_OK);
    assert_int_equal(created, 0);
    assert_int_equal(out.daily_bonus, 7);

    /* several fields at once */
    assert_int_equal(
        put(f, "pro", "{\"name\":\"Pro Plus\",\"active\":false,\"stripe_price_id\":\"price_9\"}", &out, &created, &err),
        KP_OK);
    assert_int_equal(f->s->ops->plan_get(f->s, "pro", &got, &err), KP_OK);
    assert_string_equal(got.name, "Pro Plus");
    assert_int_equal(got.active, 0);
    assert_string_equal(got.stripe_price_id, "price_9");
    assert_int_equal(got.daily_bonus, 7);
    /* and back to "" */
    assert_int_equal(put(f, "pro", "{\"stripe_price_id\":\"\"}", &out, &created, &err), KP_OK);
    assert_string_equal(out.stripe_price_id, "");
}

/* ---- ranges and types ---- */

static void test_ranges(void **state)
{
    fixture *f = *state;
    expect_refused(f, "pro", "{\"price_cents\":-1}", "price_cents");
    expect_refused(f, "pro", "{\"price_cents\":100000001}", "price_cents");
    expect_refused(f, "pro", "{\"monthly_credits\":-5}", "monthly_credits");
    expect_refused(f, "pro", "{\"monthly_credits\":1000001}", "monthly_credits");
    expect_refused(f, "pro", "{\"daily_bonus\":-1}", "daily_bonus");
    expect_refused(f, "pro", "{\"daily_bonus\":100001}", "daily_bonus");
    expect_refused(f, "pro", "{\"max_concurrent_generations\":0}", "max_concurrent_generations");
    expect_refused(f, "pro", "{\"max_concurrent_generations\":1001}", "max_concurrent_generations");
    expect_refused(f, "pro", "{\"price_cents\":9223372036854775807}", "price_cents");

    /* the bounds are inclusive */
    kp_plan out;
    kp_err err = {0};
    int created;
    assert_int_equal(put(f, "pro",
                         "{\"price_cents\":0,\"monthly_credits\":0,\"daily_bonus\":0,"
                         "\"max_concurrent_generations\":1}",
                         &out, &created, &err),
                     KP_OK);
    assert_int_equal(out.max_concurrent_generations, 1);
    assert_int_equal(put(f, "pro",
                         "{\"price_cents\":100000000,\"monthly_credits\":1000000,\"daily_bonus\":100000,"
                         "\"max_concurrent_generations\":1000}",
                         &out, &created, &err),
                     KP_OK);
    assert_int_equal(out.price_cents, 100000000);
}

static void test_type_errors(void **state)
{
    fixture *f = *state;
    expect_refused(f, "pro", "{\"price_cents\":\"100\"}", "price_cents");
    expect_refused(f, "pro", "{\"price_cents\":10.5}", "price_cents");
    expect_refused(f, "pro", "{\"price_cents\":10.0}", "price_cents");
    expect_refused(f, "pro", "{\"daily_bonus\":null}", "daily_bonus");
    expect_refused(f, "pro", "{\"daily_bonus\":true}", "daily_bonus");
    expect_refused(f, "pro", "{\"name\":5}", "name");
    expect_refused(f, "pro", "{\"name\":\"\"}", "name");
    expect_refused(f, "pro", "{\"name\":null}", "name");
    expect_refused(f, "pro", "{\"active\":\"yes\"}", "active");
    expect_refused(f, "pro", "{\"active\":1}", "active");
    expect_refused(f, "pro", "{\"currency\":\"EU\"}", "currency");
    expect_refused(f, "pro", "{\"currency\":\"EURO\"}", "currency");
    expect_refused(f, "pro", "{\"currency\":978}", "currency");
    expect_refused(f, "pro", "{\"stripe_price_id\":42}", "stripe_price_id");
    /* name: at most 100 characters */
    char text[300];
    char name[102];
    memset(name, 'n', 101);
    name[101] = '\0';
    snprintf(text, sizeof text, "{\"name\":\"%s\"}", name);
    expect_refused(f, "pro", text, "name");
    name[100] = '\0';
    snprintf(text, sizeof text, "{\"name\":\"%s\"}", name);
    kp_plan out;
    kp_err err = {0};
    int created;
    assert_int_equal(put(f, "pro", text, &out, &created, &err), KP_OK);
    assert_int_equal(strlen(out.name), 100);
    /* a later refusal does not half-apply the earlier fields of the same edit */
    expect_refused(f, "pro", "{\"name\":\"Changed\",\"daily_bonus\":-3}", "daily_bonus");
}

static void test_embedded_nul_refused(void **state)
{
    fixture *f = *state;
    kp_plan out;
    kp_err err = {0};
    int created;
    json_t *e = json_object();
    json_object_set_new(e, "name", json_stringn("Pro\0Evil", 8));
    assert_int_equal(kp_plans_put(f->s, "pro", e, &out, &created, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "name"));
    json_decref(e);
}

static void test_currency_must_be_letters(void **state)
{
    fixture *f = *state;
    kp_plan out;
    kp_err err = {0};
    int created = -1;
    assert_int_equal(put(f, "pro", "{\"currency\":\"USD\"}", &out, &created, &err), KP_OK);
    assert_string_equal(out.currency, "USD");
    expect_refused(f, "pro", "{\"currency\":\"12$\"}", "currency");
    expect_refused(f, "pro", "{\"currency\":\"\\u20ac\"}", "currency");
}

/* ---- unknown fields and ids ---- */

static void test_unknown_fields(void **state)
{
    fixture *f = *state;
    expect_refused(f, "pro", "{\"dailybonus\":5}", "dailybonus");
    expect_refused(f, "pro", "{\"daily_bonus\":5,\"Name\":\"x\"}", "Name");
    expect_refused(f, "pro", "{\"updated_at\":0}", "updated_at");
    expect_refused(f, "team", "{" FULL ",\"extra\":1}", "extra");
}

static void test_id_mismatch(void **state)
{
    fixture *f = *state;
    expect_refused(f, "pro", "{\"id\":\"free\",\"daily_bonus\":1}", "id");
    expect_refused(f, "pro", "{\"id\":7}", "id");
    expect_refused(f, "pro", "{\"id\":\"PRO\"}", "id");
    expect_refused(f, "team", "{" FULL ",\"id\":\"other\"}", "id");
    /* the same id is fine */
    kp_plan out;
    kp_err err = {0};
    int created;
    assert_int_equal(put(f, "pro", "{\"id\":\"pro\",\"daily_bonus\":2}", &out, &created, &err), KP_OK);
    assert_int_equal(out.daily_bonus, 2);
}

/* ---- JSON form ---- */

static void test_to_json(void **state)
{
    fixture *f = *state;
    kp_plan p;
    kp_err err = {0};
    assert_int_equal(f->s->ops->plan_get(f->s, "free", &p, &err), KP_OK);
    json_t *j = kp_plans_to_json(&p);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "free");
    assert_string_equal(json_string_value(json_object_get(j, "name")), "Free");
    assert_int_equal(json_integer_value(json_object_get(j, "price_cents")), 0);
    assert_string_equal(json_string_value(json_object_get(j, "currency")), "EUR");
    assert_int_equal(json_integer_value(json_object_get(j, "daily_bonus")), 5);
    assert_int_equal(json_integer_value(json_object_get(j, "monthly_credits")), 0);
    assert_true(json_is_integer(json_object_get(j, "max_concurrent_generations")));
    assert_true(json_is_string(json_object_get(j, "stripe_price_id")));
    assert_true(json_is_true(json_object_get(j, "active")));
    assert_null(json_object_get(j, "updated_at"));
    json_decref(j);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    kp_log_set_level(KP_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_ids),
        T(test_put_refuses_invalid_id),
        T(test_create_with_all_fields),
        T(test_create_with_optional_fields),
        T(test_create_requires_fields),
        T(test_partial_update_keeps_other_fields),
        T(test_ranges),
        T(test_type_errors),
        T(test_embedded_nul_refused),
        T(test_currency_must_be_letters),
        T(test_unknown_fields),
        T(test_id_mismatch),
        T(test_to_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
