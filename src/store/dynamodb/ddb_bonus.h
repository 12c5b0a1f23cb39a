/*
 * ddb_bonus.h - the DynamoDB backend's daily bonus ops (store.h
 * users_bonus_page, credits_apply_many, bonus_page_grant); ddb_store.c wires them into its
 * ops table.
 */
#ifndef KP_DDB_BONUS_H
#define KP_DDB_BONUS_H

#include "store/store.h"

kp_status kp_ddb_credits_apply_many(kp_store *s, const kp_credit_change *c, size_t n, kp_status *results, kp_err *err);
kp_status kp_ddb_users_bonus_page(kp_store *s, const char *token, unsigned segment, unsigned total_segments,
                                  size_t limit, kp_bonus_candidate **out, size_t *n, char next[KP_PAGE_TOKEN_MAX],
                                  kp_err *err);

kp_status kp_ddb_bonus_page_grant(kp_store *s, const char *token, unsigned segment, unsigned total_segments,
                                  size_t limit, kp_bonus_rule_fn rule, void *arg, kp_bonus_page *out,
                                  char next[KP_PAGE_TOKEN_MAX], kp_err *err);

#endif
