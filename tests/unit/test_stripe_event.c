/*
 * test_stripe_event.c - reading Stripe events (src/domain/stripe_event.c) in
 * both field layouts: basil and later (2025-03-31+: current_period_end on the
 * items, an invoice's subscription under parent.subscription_details, its
 * price under pricing.price_details) and the legacy one; ids as strings and
 * as expanded objects; what is not an event.
 *
 * The bodies are trimmed copies of the events in Stripe's API reference.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "domain/stripe_event.h"

static void parse_ok(const char *body, kp_stripe_event *ev)
{
    kp_err err = {0};
    kp_status st = kp_stripe_event_parse(body, strlen(body), ev, &err);
    if (st != KP_OK)
        fail_msg("refused: %s", err.msg);
}

static void parse_fails(const char *body, const char *want)
{
    kp_err err = {0};
    kp_stripe_event ev;
    assert_int_equal(kp_stripe_event_parse(body, strlen(body), &ev, &err), KP_EINVAL);
    if (!strstr(err.msg, want))
        fail_msg("message \"%s\" does not say \"%s\"", err.msg, want);
}

static void test_subscription_basil(void **state)
{
    (void)state;
    kp_stripe_event ev;
    parse_ok("{\"id\":\"evt_1\",\"object\":\"event\",\"api_version\":\"2026-10-28.endive\",\"created\":1764600000,"
             "\"livemode\":false,\"type\":\"customer.subscription.updated\",\"data\":{\"object\":{"
             "\"id\":\"sub_1\",\"object\":\"subscription\",\"customer\":\"cus_1\",\"status\":\"active\","
             "\"cancel_at_period_end\":true,\"metadata\":{\"koumpa_user_id\":\"usr_abc\"},"
             "\"items\":{\"object\":\"list\",\"data\":[{\"id\":\"si_1\",\"current_period_start\":1764600000,"
             "\"current_period_end\":1767278400,\"price\":{\"id\":\"price_pro\",\"object\":\"price\"}}]}},"
             "\"previous_attributes\":{\"status\":\"incomplete\"}}}",
             &ev);
    assert_string_equal(ev.id, "evt_1");
    assert_int_equal(ev.kind, KP_STRIPE_EV_SUBSCRIPTION_UPDATED);
    assert_int_equal(ev.created, 1764600000);
    assert_string_equal(ev.object_id, "sub_1");
    assert_string_equal(ev.subscription_id, "sub_1");
    assert_string_equal(ev.customer_id, "cus_1");
    assert_string_equal(ev.status, "active");
    assert_string_equal(ev.price_id, "price_pro");
    assert_string_equal(ev.metadata_user_id, "usr_abc");
    assert_int_equal(ev.current_period_end, 1767278400);
    assert_int_equal(ev.cancel_at_period_end, 1);
}

static void test_subscription_legacy(void **state)
{
    (void)state;
    kp_stripe_event ev;
    parse_ok("{\"id\":\"evt_2\",\"object\":\"event\",\"api_version\":\"2024-06-20\",\"created\":1700000000,"
             "\"type\":\"customer.subscription.created\",\"data\":{\"object\":{"
             "\"id\":\"sub_2\",\"object\":\"subscription\",\"customer\":{\"id\":\"cus_2\",\"object\":\"customer\"},"
             "\"status\":\"trialing\",\"current_period_end\":1702592000,\"cancel_at_period_end\":false,"
             "\"metadata\":{},\"items\":{\"data\":[{\"id\":\"si_2\",\"price\":{\"id\":\"price_biz\"}},"
             "{\"id\":\"si_3\",\"price\":{\"id\":\"price_other\"}}]}}}}",
             &ev);
    assert_int_equal(ev.kind, KP_STRIPE_EV_SUBSCRIPTION_CREATED);
    assert_string_equal(ev.customer_id, "cus_2"); /* expanded */
    assert_string_equal(ev.status, "trialing");
    assert_string_equal(ev.price_id, "price_biz"); /* the first item's */
    assert_string_equal(ev.metadata_user_id, "");
    assert_int_equal(ev.current_period_end, 1702592000);
    assert_int_equal(ev.cancel_at_period_end, 0);
}

static void test_subscription_deleted_is_canceled(void **state)
{
    (void)state;
    kp_stripe_event ev;
    parse_ok("{\"id\":\"evt_3\",\"created\":1700000001,\"type\":\"customer.subscription.deleted\","
             "\"data\":{\"object\":{\"id\":\"sub_3\",\"customer\":\"cus_3\",\"status\":\"active\"}}}",
             &ev);
    assert_int_equal(ev.kind, KP_STRIPE_EV_SUBSCRIPTION_DELETED);
    assert_string_equal(ev.status, "canceled");
}

static void test_invoice_basil(void **state)
{
    (void)state;
    kp_stripe_event ev;
    parse_ok("{\"id\":\"evt_4\",\"object\":\"event\",\"created\":1764600005,\"type\":\"invoice.paid\","
             "\"data\":{\"object\":{\"id\":\"in_4\",\"object\":\"invoice\",\"customer\":\"cus_4\","
             "\"billing_reason\":\"subscription_create\",\"status\":\"paid\","
             "\"parent\":{\"type\":\"subscription_details\",\"quote_details\":null,\"subscription_details\":{"
             "\"metadata\":{\"koumpa_user_id\":\"usr_4\"},\"subscription\":\"sub_4\"}},"
             "\"lines\":{\"object\":\"list\",\"data\":[{\"id\":\"il_1\",\"amount\":900,"
             "\"parent\":{\"type\":\"subscription_item_details\",\"subscription_item_details\":{"
             "\"subscription\":\"sub_4\",\"subscription_item\":\"si_4\"}},"
             "\"pricing\":{\"type\":\"price_details\",\"price_details\":{\"price\":\"price_pro\","
             "\"product\":\"prod_1\"},\"unit_amount_decimal\":\"900\"}}]}}}}",
             &ev);
    assert_int_equal(ev.kind, KP_STRIPE_EV_INVOICE_PAID);
    assert_string_equal(ev.object_id, "in_4");
    assert_string_equal(ev.subscription_id, "sub_4");
    assert_string_equal(ev.customer_id, "cus_4");
    assert_string_equal(ev.price_id, "price_pro");
    assert_string_equal(ev.metadata_user_id, "usr_4");
}

static void test_invoice_legacy(void **state)
{
    (void)state;
    kp_stripe_event ev;
    parse_ok("{\"id\":\"evt_5\",\"created\":1700000005,\"type\":\"invoice.payment_failed\","
             "\"data\":{\"object\":{\"id\":\"in_5\",\"customer\":\"cus_5\",\"subscription\":\"sub_5\","
             "\"subscription_details\":{\"metadata\":{\"koumpa_user_id\":\"usr_5\"}},"
             "\"lines\":{\"data\":[{\"id\":\"il_0\",\"price\":null},{\"id\":\"il_5\",\"price\":{\"id\":\"price_biz\","
             "\"object\":\"price\"}}]}}}}",
             &ev);
    assert_int_equal(ev.kind, KP_STRIPE_EV_INVOICE_FAILED);
    assert_string_equal(ev.subscription_id, "sub_5");
    assert_string_equal(ev.price_id, "price_biz"); /* the first line that has a price */
    assert_string_equal(ev.metadata_user_id, "usr_5");
}

/* basil: the subscription only on the line's parent (no invoice.parent) is still found. */
static void test_invoice_subscription_from_line(void **state)
{
    (void)state;
    kp_stripe_event ev;
    parse_ok("{\"id\":\"evt_6\",\"created\":1764600006,\"type\":\"invoice.paid\",\"data\":{\"object\":{"
             "\"id\":\"in_6\",\"customer\":\"cus_6\",\"parent\":null,\"lines\":{\"data\":[{\"parent\":{"
             "\"subscription_item_details\":{\"subscription\":\"sub_6\"}},"
             "\"pricing\":{\"price_details\":{\"price\":\"price_pro\"}}}]}}}}",
             &ev);
    assert_string_equal(ev.subscription_id, "sub_6");
    assert_string_equal(ev.metadata_user_id, "");
}

static void test_checkout(void **state)
{
    (void)state;
    kp_stripe_event ev;
    parse_ok("{\"id\":\"evt_7\",\"created\":1764600000,\"type\":\"checkout.session.completed\",\"data\":{\"object\":{"
             "\"id\":\"cs_test_7\",\"object\":\"checkout.session\",\"mode\":\"subscription\",\"status\":\"complete\","
             "\"client_reference_id\":\"usr_7\",\"customer\":\"cus_7\",\"subscription\":\"sub_7\","
             "\"metadata\":{\"koumpa_user_id\":\"usr_7\"},\"payment_status\":\"paid\"}}}",
             &ev);
    assert_int_equal(ev.kind, KP_STRIPE_EV_CHECKOUT_COMPLETED);
    assert_string_equal(ev.object_id, "cs_test_7");
    assert_string_equal(ev.client_reference_id, "usr_7");
    assert_string_equal(ev.customer_id, "cus_7");
    assert_string_equal(ev.subscription_id, "sub_7");
    assert_string_equal(ev.mode, "subscription");
    assert_string_equal(ev.metadata_user_id, "usr_7");
}

static void test_other_type(void **state)
{
    (void)state;
    kp_stripe_event ev;
    parse_ok("{\"id\":\"evt_8\",\"created\":1,\"type\":\"charge.refunded\",\"data\":{\"object\":{}}}", &ev);
    assert_int_equal(ev.kind, KP_STRIPE_EV_OTHER);
    assert_string_equal(ev.type, "charge.refunded");
    assert_int_equal(kp_stripe_event_kind_of("invoice.paid"), KP_STRIPE_EV_INVOICE_PAID);
    assert_int_equal(kp_stripe_event_kind_of("invoice.paid.x"), KP_STRIPE_EV_OTHER);
}

/* A metadata id that cannot be a user id is no user, not an error. */
static void test_long_metadata_ignored(void **state)
{
    (void)state;
    kp_stripe_event ev;
    char body[1024], longid[200];
    memset(longid, 'u', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    snprintf(body, sizeof body,
             "{\"id\":\"evt_9\",\"created\":2,\"type\":\"customer.subscription.created\",\"data\":{\"object\":"
             "{\"id\":\"sub_9\",\"status\":\"active\",\"metadata\":{\"koumpa_user_id\":\"%s\"}}}}",
             longid);
    parse_ok(body, &ev);
    assert_string_equal(ev.metadata_user_id, "");
}

static void test_not_events(void **state)
{
    (void)state;
    char body[1024], longid[200];
    parse_fails("", "not JSON");
    parse_fails("{\"id\":", "not JSON");
    parse_fails("[1,2]", "not a Stripe event");
    parse_fails("{\"id\":\"evt_1\",\"type\":\"invoice.paid\",\"created\":1}", "data.object");
    parse_fails("{\"type\":\"invoice.paid\",\"created\":1,\"data\":{\"object\":{}}}", "id");
    parse_fails("{\"id\":\"evt_1\",\"created\":1,\"data\":{\"object\":{}}}", "type");
    parse_fails("{\"id\":\"evt_1\",\"type\":\"invoice.paid\",\"created\":\"1\",\"data\":{\"object\":{}}}", "created");
    parse_fails("{\"id\":\"evt_1\",\"type\":\"invoice.paid\",\"created\":0,\"data\":{\"object\":{\"id\":\"in_1\"}}}",
                "positive");
    parse_fails("{\"id\":\"evt_1\",\"type\":\"invoice.paid\",\"created\":1,\"data\":{\"object\":{}}}",
                "without data.object.id");
    memset(longid, 's', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    snprintf(body, sizeof body,
             "{\"id\":\"evt_1\",\"type\":\"customer.subscription.created\",\"created\":1,\"data\":{\"object\":"
             "{\"id\":\"%s\"}}}",
             longid);
    parse_fails(body, "too long");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subscription_basil),
        cmocka_unit_test(test_subscription_legacy),
        cmocka_unit_test(test_subscription_deleted_is_canceled),
        cmocka_unit_test(test_invoice_basil),
        cmocka_unit_test(test_invoice_legacy),
        cmocka_unit_test(test_invoice_subscription_from_line),
        cmocka_unit_test(test_checkout),
        cmocka_unit_test(test_other_type),
        cmocka_unit_test(test_long_metadata_ignored),
        cmocka_unit_test(test_not_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
