/*
 * secrets_config.h - the secrets service as the configuration asks for it
 * (KOUMPA_SECRETS), built once here for every command that needs one.
 *
 *   env (default)  secrets_env.c: NAME or NAME_FILE, with KOUMPA_JWT_SECRET
 *                  falling back to {data_dir}/jwt_secret
 *                  (kp_config_ensure_secret generates it);
 *   aws            secrets_aws.c: each name with a KOUMPA_SECRET_ID_* from
 *                  Secrets Manager, the others from the env source above;
 *                  every configured secret is read once before this
 *                  returns, so wrong credentials or a missing secret stop
 *                  start-up with a message naming them.
 * Either way wrapped in the cache of secrets.h (KOUMPA_SECRETS_TTL).
 */
#ifndef KP_SECRETS_CONFIG_H
#define KP_SECRETS_CONFIG_H

#include "core/config.h"
#include "core/err.h"
#include "secrets/secrets.h"

/* The service for cfg; free with kp_secrets_free. err names the setting,
 * the secret or the AWS error (never a value). */
kp_status kp_secrets_config_open(const kp_config *cfg, kp_secrets **out, kp_err *err);

#endif
