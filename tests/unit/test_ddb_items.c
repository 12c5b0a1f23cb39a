/*
 * test_ddb_items.c - the DynamoDB backend's marshalling (store/dynamodb/
 * ddb_client.h attribute values, ddb_items.h items): the wire shapes
 * DynamoDB expects ({"S"}, {"N": "text"}, {"BOOL"}), keys that sort as
 * numbers, and structs that come back unchanged from their items.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "store/dynamodb/ddb_client.h"
#include "store/dynamodb/ddb_items.h"

static void assert_json(json_t *v, const char *expected)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(text);
    assert_string_equal(text, expected);
    free(text);
    json_decref(v);
}

static void test_attribute_values(void **state)
{
    (void)state;
    assert_json(kp_ddb_s("a\"b"), "{\"S\":\"a\\\"b\"}");
    assert_json(kp_ddb_s(NULL), "{\"S\":\"\"}");
    assert_json(kp_ddb_n(-9007199254740993LL), "{\"N\":\"-9007199254740993\"}"); /* beyond a double: text */
    assert_json(kp_ddb_bool(7), "{\"BOOL\":true}");

    json_t *item = json_pack("{s:o, s:o, s:o, s:{s:i}}", "s", kp_ddb_s("x"), "n", kp_ddb_n(INT64_MAX), "b",
                             kp_ddb_bool(1), "wrong", "N", 5);
    char buf[4];
    kp_ddb_get_s(item, "s", buf, sizeof buf);
    assert_string_equal(buf, "x");
    kp_ddb_get_s(item, "missing", buf, sizeof buf);
    assert_string_equal(buf, "");
    assert_true(kp_ddb_get_n(item, "n") == INT64_MAX);
    assert_true(kp_ddb_get_n(item, "wrong") == 0); /* N must be text */
    assert_true(kp_ddb_get_n(item, "s") == 0);
    assert_int_equal(kp_ddb_get_bool(item, "b"), 1);
    assert_int_equal(kp_ddb_get_bool(item, "n"), 0);
    json_decref(item);
}

static void test_ledger_keys_sort_as_numbers(void **state)
{
    (void)state;
    char a[KP_DDB_KEY_MAX], b[KP_DDB_KEY_MAX], c[KP_DDB_KEY_MAX];
    kp_ddb_ledger_sk(a, 9);
    kp_ddb_ledger_sk(b, 10);
    kp_ddb_ledger_sk(c, INT64_MAX);
    assert_string_equal(a, "L#0000000000000000009");
    assert_true(strcmp(a, b) < 0 && strcmp(b, c) < 0);
}

static void test_round_trips(void **state)
{
    (void)state;
    kp_plan p = {"pro", "Pro", 2500, "EUR", 100, 5, 3, "price_1", 1, 42}, p2 = {0};
    json_t *item = kp_ddb_plan_item(&p);
    assert_json(json_incref(json_object_get(item, "PK")), "{\"S\":\"PLAN\"}");
    assert_json(json_incref(json_object_get(item, "SK")), "{\"S\":\"PLAN#pro\"}");
    kp_ddb_plan_from(item, &p2);
    assert_memory_equal(&p, &p2, sizeof p);
    json_decref(item);

    kp_user u = {0}, u2 = {0};
    kp_balance bal = {3, 4, 5}, bal2 = {0};
    strcpy(u.id, "usr_1");
    strcpy(u.email, "a@example.com");
    strcpy(u.password_hash, "$argon2id$x");
    strcpy(u.external_sub, "https://idp|s");
    strcpy(u.plan_id, "free");
    u.is_admin = 1;
    u.created_at = 1700000000;
    u.email_verified = 1;
    item = kp_ddb_user_item(&u, &bal);
    assert_json(json_incref(json_object_get(item, "PK")), "{\"S\":\"USER#usr_1\"}");
    kp_ddb_user_from(item, &u2);
    kp_ddb_balance_from(item, &bal2);
    assert_memory_equal(&u, &u2, sizeof u);
    assert_memory_equal(&bal, &bal2, sizeof bal);
    json_decref(item);

    kp_ledger_entry e = {0}, e2 = {0};
    e.seq = 12;
    strcpy(e.user_id, "usr_1");
    e.delta_daily = -1;
    e.balance_daily = 2;
    strcpy(e.reason, "generation");
    strcpy(e.idem_key, "k");
    strcpy(e.reservation_id, "res_1");
    e.created_at = 9;
    item = kp_ddb_ledger_item(&e);
    assert_json(json_incref(json_object_get(item, "SK")), "{\"S\":\"L#0000000000000000012\"}");
    kp_ddb_ledger_from(item, &e2);
    assert_memory_equal(&e, &e2, sizeof e);
    json_decref(item);

    /* zeroed whole first: the padding after state is compared too */
    kp_reservation r, r2;
    memset(&r, 0, sizeof r);
    memset(&r2, 0, sizeof r2);
    strcpy(r.id, "res_1");
    strcpy(r.user_id, "usr_1");
    r.daily = 1;
    r.monthly = 2;
    r.state = KP_RES_COMMITTED;
    r.created_at = 3;
    r.updated_at = 4;
    item = kp_ddb_reservation_item(&r);
    kp_ddb_reservation_from(item, &r2);
    assert_memory_equal(&r, &r2, sizeof r);
    json_decref(item);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attribute_values),
        cmocka_unit_test(test_ledger_keys_sort_as_numbers),
        cmocka_unit_test(test_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
