/*
 * stripe_event.c - see stripe_event.h. The event is parsed with jansson and
 * read through small getters that accept both an id string and an expanded
 * object, and both field layouts (basil and later first, then legacy).
 */
#include "domain/stripe_event.h"

#include <jansson.h>
#include <string.h>

static const struct {
    const char *type;
    kp_stripe_event_kind kind;
} kinds[] = {
    {"checkout.session.completed", KP_STRIPE_EV_CHECKOUT_COMPLETED},
    {"customer.subscription.created", KP_STRIPE_EV_SUBSCRIPTION_CREATED},
    {"customer.subscription.updated", KP_STRIPE_EV_SUBSCRIPTION_UPDATED},
    {"customer.subscription.deleted", KP_STRIPE_EV_SUBSCRIPTION_DELETED},
    {"invoice.paid", KP_STRIPE_EV_INVOICE_PAID},
    {"invoice.payment_failed", KP_STRIPE_EV_INVOICE_FAILED},
};

kp_stripe_event_kind kp_stripe_event_kind_of(const char *type)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(type, kinds[i].type) == 0)
            return kinds[i].kind;
    return KP_STRIPE_EV_OTHER;
}

/* Parsing state: the first field that did not fit, for the error message. */
typedef struct reader {
    const char *too_long;
} reader;

/* Copies s (may be NULL: "") into dst; a value that does not fit is recorded as an error. */
static void copy(reader *r, char *dst, size_t cap, const char *field, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n >= cap) {
        if (!r->too_long)
            r->too_long = field;
        n = 0;
    }
    memcpy(dst, s ? s : "", n);
    dst[n] = '\0';
}

/* An id given as a string or as an expanded object {"id": ...}; NULL when neither. */
static const char *id_of(json_t *v)
{
    if (json_is_object(v))
        v = json_object_get(v, "id");
    return json_string_value(v);
}

/* obj.a.b.c... (NULL-terminated path); NULL when any step is missing. */
static json_t *path(json_t *obj, const char *const *keys)
{
    for (; obj && *keys; keys++)
        obj = json_is_object(obj) ? json_object_get(obj, *keys) : NULL;
    return obj;
}

#define PATH(obj, ...) path((obj), (const char *const[]){__VA_ARGS__, NULL})

/* The first element of list.data, or NULL. */
static json_t *first_of(json_t *list)
{
    return json_array_get(json_object_get(list, "data"), 0);
}

static int64_t int_of(json_t *v)
{
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

/* metadata.koumpa_user_id; "" when it cannot be a user id. */
static void read_metadata_user(json_t *metadata, kp_stripe_event *ev)
{
    const char *u = json_string_value(json_object_get(metadata, "koumpa_user_id"));
    size_t n = u ? strlen(u) : 0;
    if (n > 0 && n < sizeof ev->metadata_user_id)
        memcpy(ev->metadata_user_id, u, n + 1);
}

static void read_checkout(reader *r, json_t *o, kp_stripe_event *ev)
{
    copy(r, ev->subscription_id, sizeof ev->subscription_id, "subscription", id_of(json_object_get(o, "subscription")));
    copy(r, ev->mode, sizeof ev->mode, "mode", json_string_value(json_object_get(o, "mode")));
    const char *ref = json_string_value(json_object_get(o, "client_reference_id"));
    if (ref && strlen(ref) < sizeof ev->client_reference_id)
        copy(r, ev->client_reference_id, sizeof ev->client_reference_id, "client_reference_id", ref);
    read_metadata_user(json_object_get(o, "metadata"), ev);
}

static void read_subscription(reader *r, json_t *o, kp_stripe_event *ev)
{
    json_t *item = first_of(json_object_get(o, "items"));
    json_t *period_end = json_object_get(item, "current_period_end"); /* basil and later */
    if (!json_is_integer(period_end))
        period_end = json_object_get(o, "current_period_end"); /* before 2025-03-31 */
    copy(r, ev->subscription_id, sizeof ev->subscription_id, "id", id_of(json_object_get(o, "id")));
    copy(r, ev->status, sizeof ev->status, "status", json_string_value(json_object_get(o, "status")));
    copy(r, ev->price_id, sizeof ev->price_id, "items.data[0].price", id_of(json_object_get(item, "price")));
    ev->current_period_end = int_of(period_end);
    ev->cancel_at_period_end = json_is_true(json_object_get(o, "cancel_at_period_end"));
    read_metadata_user(json_object_get(o, "metadata"), ev);
    if (ev->kind == KP_STRIPE_EV_SUBSCRIPTION_DELETED)
        copy(r, ev->status, sizeof ev->status, "status", "canceled");
}

/* The price of the first invoice line that has one, in either layout. */
static const char *invoice_price(json_t *invoice)
{
    json_t *lines = json_object_get(json_object_get(invoice, "lines"), "data");
    size_t i;
    json_t *line;
    json_array_foreach(lines, i, line)
    {
        const char *p = id_of(PATH(line, "pricing", "price_details", "price")); /* basil and later */
        if (!p)
            p = id_of(json_object_get(line, "price")); /* before */
        if (p)
            return p;
    }
    return NULL;
}

static void read_invoice(reader *r, json_t *o, kp_stripe_event *ev)
{
    json_t *details = PATH(o, "parent", "subscription_details"); /* basil and later */
    const char *sub = id_of(json_object_get(details, "subscription"));
    if (!sub)
        sub = id_of(json_object_get(o, "subscription")); /* before */
    if (!sub)
        sub = id_of(PATH(first_of(json_object_get(o, "lines")), "parent", "subscription_item_details", "subscription"));
    if (!details)
        details = json_object_get(o, "subscription_details"); /* before: its metadata */
    copy(r, ev->subscription_id, sizeof ev->subscription_id, "subscription", sub);
    copy(r, ev->price_id, sizeof ev->price_id, "lines.data[].price", invoice_price(o));
    read_metadata_user(json_object_get(details, "metadata"), ev);
}

static kp_status read_event(json_t *root, kp_stripe_event *ev, kp_err *err)
{
    reader r = {0};
    json_t *object = PATH(root, "data", "object");
    const char *id = json_string_value(json_object_get(root, "id"));
    const char *type = json_string_value(json_object_get(root, "type"));
    json_t *created = json_object_get(root, "created");
    if (!json_is_object(root) || !id || !*id || !type || !*type || !json_is_integer(created) || !json_is_object(object))
        return kp_err_set(err, KP_EINVAL,
                          "not a Stripe event: expected an object with id, type, created and "
                          "data.object");
    if (json_integer_value(created) <= 0)
        return kp_err_set(err, KP_EINVAL, "not a Stripe event: created must be a positive Unix time");
    copy(&r, ev->id, sizeof ev->id, "id", id);
    copy(&r, ev->type, sizeof ev->type, "type", type);
    ev->kind = kp_stripe_event_kind_of(ev->type);
    ev->created = (int64_t)json_integer_value(created);
    ev->livemode = json_is_true(json_object_get(root, "livemode"));
    copy(&r, ev->object_id, sizeof ev->object_id, "data.object.id", id_of(json_object_get(object, "id")));
    copy(&r, ev->customer_id, sizeof ev->customer_id, "customer", id_of(json_object_get(object, "customer")));
    switch (ev->kind) {
    case KP_STRIPE_EV_CHECKOUT_COMPLETED: read_checkout(&r, object, ev); break;
    case KP_STRIPE_EV_SUBSCRIPTION_CREATED:
    case KP_STRIPE_EV_SUBSCRIPTION_UPDATED:
    case KP_STRIPE_EV_SUBSCRIPTION_DELETED: read_subscription(&r, object, ev); break;
    case KP_STRIPE_EV_INVOICE_PAID:
    case KP_STRIPE_EV_INVOICE_FAILED: read_invoice(&r, object, ev); break;
    case KP_STRIPE_EV_OTHER: break;
    }
    if (r.too_long)
        return kp_err_set(err, KP_EINVAL, "not a Stripe event: %s is too long", r.too_long);
    if (ev->kind != KP_STRIPE_EV_OTHER && !*ev->object_id)
        return kp_err_set(err, KP_EINVAL, "not a Stripe event: %s without data.object.id", ev->type);
    return KP_OK;
}

kp_status kp_stripe_event_parse(const char *body, size_t len, kp_stripe_event *ev, kp_err *err)
{
    json_error_t jerr;
    memset(ev, 0, sizeof *ev);
    json_t *root = json_loadb(body ? body : "", len, 0, &jerr);
    if (!root)
        return kp_err_set(err, KP_EINVAL, "body is not JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                          jerr.column);
    kp_status st = read_event(root, ev, err);
    json_decref(root);
    return st;
}
