/* plans.c - see plans.h. */
#include "domain/plans.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int kp_plans_valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= KP_PLAN_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

typedef struct int_field {
    const char *name;
    size_t offset;
    int64_t min, max;
} int_field;

static const int_field int_fields[] = {
    {"price_cents", offsetof(kp_plan, price_cents), 0, 100000000},
    {"monthly_credits", offsetof(kp_plan, monthly_credits), 0, 1000000},
    {"daily_bonus", offsetof(kp_plan, daily_bonus), 0, 100000},
    {"max_concurrent_generations", offsetof(kp_plan, max_concurrent_generations), 1, 1000},
};

static const char *known_fields[] = {"name",
                                     "price_cents",
                                     "currency",
                                     "monthly_credits",
                                     "daily_bonus",
                                     "max_concurrent_generations",
                                     "stripe_price_id",
                                     "active",
                                     "id",
                                     NULL};

static kp_status check_unknown_fields(json_t *edit, kp_err *err)
{
    const char *key;
    json_t *value;
    json_object_foreach(edit, key, value)
    {
        int known = 0;
        for (const char **k = known_fields; *k; k++)
            known |= strcmp(*k, key) == 0;
        if (!known)
            return kp_err_set(err, KP_EINVAL, "unknown field %s", key);
    }
    return KP_OK;
}

static kp_status apply_string(json_t *edit, const char *field, char *dst, size_t dst_size, size_t min_len, kp_err *err)
{
    json_t *v = json_object_get(edit, field);
    if (!v)
        return KP_OK;
    if (!json_is_string(v))
        return kp_err_set(err, KP_EINVAL, "%s must be a string", field);
    size_t n = json_string_length(v);
    if (n < min_len || n >= dst_size)
        return kp_err_set(err, KP_EINVAL, "%s must be %zu to %zu characters", field, min_len, dst_size - 1);
    if (strlen(json_string_value(v)) != n)
        return kp_err_set(err, KP_EINVAL, "%s must not contain NUL characters", field);
    memcpy(dst, json_string_value(v), n + 1);
    return KP_OK;
}

static int is_currency_code(const char *c)
{
    for (int i = 0; i < 3; i++)
        if (c[i] < 'A' || c[i] > 'Z')
            return 0;
    return c[3] == '\0';
}

static kp_status apply_edit(json_t *edit, kp_plan *p, int creating, kp_err *err)
{
    kp_status rc = check_unknown_fields(edit, err);
    json_t *id = json_object_get(edit, "id");
    if (rc == KP_OK && id && (!json_is_string(id) || strcmp(json_string_value(id), p->id) != 0))
        rc = kp_err_set(err, KP_EINVAL, "id in the body must match the URL (%s)", p->id);
    if (rc == KP_OK)
        rc = apply_string(edit, "name", p->name, 101, 1, err);
    if (rc == KP_OK)
        rc = apply_string(edit, "stripe_price_id", p->stripe_price_id, sizeof p->stripe_price_id, 0, err);
    if (rc == KP_OK)
        rc = apply_string(edit, "currency", p->currency, sizeof p->currency, 3, err);
    for (size_t i = 0; rc == KP_OK && i < sizeof int_fields / sizeof int_fields[0]; i++) {
        const int_field *f = &int_fields[i];
        json_t *v = json_object_get(edit, f->name);
        if (!v) {
            if (creating)
                rc = kp_err_set(err, KP_EINVAL, "%s is required for a new plan", f->name);
            continue;
        }
        if (!json_is_integer(v) || json_integer_value(v) < f->min || json_integer_value(v) > f->max)
            rc = kp_err_set(err, KP_EINVAL, "%s must be a whole number from %lld to %lld", f->name, (long long)f->min,
                            (long long)f->max);
        else
            *(int64_t *)((char *)p + f->offset) = json_integer_value(v);
    }
    json_t *active = json_object_get(edit, "active");
    if (rc == KP_OK && active) {
        if (!json_is_boolean(active))
            rc = kp_err_set(err, KP_EINVAL, "active must be true or false");
        else
            p->active = json_is_true(active);
    }
    if (rc == KP_OK && creating && !json_object_get(edit, "name"))
        rc = kp_err_set(err, KP_EINVAL, "name is required for a new plan");
    if (rc == KP_OK && !is_currency_code(p->currency))
        rc = kp_err_set(err, KP_EINVAL, "currency must be a 3-letter ISO 4217 code such as EUR");
    return rc;
}

kp_status kp_plans_put(kp_store *s, const char *id, json_t *edit, kp_plan *out, int *created, kp_err *err)
{
    kp_plan p;
    if (!kp_plans_valid_id(id))
        return kp_err_set(err, KP_EINVAL, "plan id must be 1 to 63 characters of a-z, 0-9, _ and -");
    kp_status rc = s->ops->plan_get(s, id, &p, err);
    if (rc != KP_OK && rc != KP_ENOTFOUND)
        return rc;
    int creating = rc == KP_ENOTFOUND;
    if (creating) {
        memset(&p, 0, sizeof p);
        snprintf(p.id, sizeof p.id, "%s", id);
        memcpy(p.currency, "EUR", 4);
        p.active = 1;
    }
    kp_err_clear(err);
    rc = apply_edit(edit, &p, creating, err);
    if (rc != KP_OK)
        return rc;
    p.updated_at = (int64_t)time(NULL);
    rc = s->ops->plan_put(s, &p, created, err);
    if (rc == KP_OK && out)
        *out = p;
    return rc;
}

void kp_plans_write(kp_jsonw *w, const char *key, const kp_plan *p)
{
    kp_jsonw_open(w, key);
    kp_jsonw_str(w, "id", p->id);
    kp_jsonw_str(w, "name", p->name);
    kp_jsonw_int(w, "price_cents", p->price_cents);
    kp_jsonw_str(w, "currency", p->currency);
    kp_jsonw_int(w, "monthly_credits", p->monthly_credits);
    kp_jsonw_int(w, "daily_bonus", p->daily_bonus);
    kp_jsonw_int(w, "max_concurrent_generations", p->max_concurrent_generations);
    kp_jsonw_str(w, "stripe_price_id", p->stripe_price_id);
    kp_jsonw_bool(w, "active", p->active);
    kp_jsonw_close(w);
}

/* One definition of the plan's shape: kp_plans_write's text, parsed (the
 * admin and plan listings are not a hot path). */
json_t *kp_plans_to_json(const kp_plan *p)
{
    kp_buf text = KP_BUF_INIT;
    kp_jsonw w;
    kp_jsonw_init(&w, &text);
    kp_plans_write(&w, NULL, p);
    json_t *out = kp_jsonw_end(&w) == 0 ? json_loadb(text.data, text.len, JSON_DECODE_ANY, NULL) : NULL;
    kp_buf_free(&text);
    return out;
}
