/*
 * plans.h - plan rules: what a valid plan is, and how an admin's edit applies.
 *
 * An edit is a JSON object of fields to set; fields it omits keep their value
 * (for a new plan, name, price_cents, monthly_credits, daily_bonus and
 * max_concurrent_generations are required). Unknown fields are refused, so a
 * typo never silently does nothing.
 */
#ifndef KP_PLANS_H
#define KP_PLANS_H

#include <jansson.h>

#include "core/jsonw.h"
#include "store/store.h"

/* 1 if id is a valid plan id: [a-z0-9_-], 1..63 chars. */
int kp_plans_valid_id(const char *id);

/* Creates or updates plan id from edit; *created tells which; out receives the
 * stored plan. KP_EINVAL with a message naming the field. */
kp_status kp_plans_put(kp_store *s, const char *id, json_t *edit, kp_plan *out, int *created, kp_err *err);

/* The plan as JSON (caller decrefs); NULL when out of memory. */
json_t *kp_plans_to_json(const kp_plan *p);
/* The same object written as the member key of w's current object (key NULL: a value on its own). */
void kp_plans_write(kp_jsonw *w, const char *key, const kp_plan *p);

#endif
