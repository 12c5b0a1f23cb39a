/*
 * secrets_config.c - see secrets_config.h.
 */
#include "secrets/secrets_config.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "secrets/secrets_aws.h"
#include "secrets/secrets_env.h"

/* The environment source, with the generated JWT secret file as fallback. */
static kp_status open_env(const kp_config *cfg, kp_secrets_source *out, kp_err *err)
{
    char *jwt_file = kp_config_jwt_secret_file(cfg);
    if (!jwt_file)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_secrets_env_fallback fallback = {.name = KP_SECRET_JWT_SECRET, .path = jwt_file};
    kp_status rc = kp_secrets_env_new(&fallback, 1, out, err);
    free(jwt_file);
    return rc;
}

kp_status kp_secrets_config_open(const kp_config *cfg, kp_secrets **out, kp_err *err)
{
    kp_secrets_source source = {0};
    kp_secrets_aws_options ao = {
        .anthropic_id = cfg->secret_id_anthropic, .stripe_id = cfg->secret_id_stripe, .jwt_id = cfg->secret_id_jwt};
    int aws = cfg->secrets_source && strcmp(cfg->secrets_source, "aws") == 0;
    *out = NULL;
    kp_status rc = open_env(cfg, &source, err);
    if (rc == KP_OK && aws)
        rc = kp_secrets_aws_new(&ao, source, &source, err); /* takes the env source as its fallback */
    if (rc == KP_OK)
        rc = kp_secrets_new(source, cfg->secrets_ttl_s, out, err);
    if (rc == KP_OK && aws) {
        kp_log_json(KP_LOG_INFO, "secrets: AWS Secrets Manager, then the environment",
                    json_pack("{s:s?,s:s?,s:s?}", "KOUMPA_SECRET_ID_ANTHROPIC", cfg->secret_id_anthropic,
                              "KOUMPA_SECRET_ID_STRIPE", cfg->secret_id_stripe, "KOUMPA_SECRET_ID_JWT",
                              cfg->secret_id_jwt));
        rc = kp_secrets_aws_preload(*out, &ao, err);
        if (rc == KP_OK) /* a GetSecretValue may take seconds: never on a caller's thread after start-up */
            rc = kp_secrets_refresh_in_background(*out, err);
    }
    if (rc != KP_OK) {
        kp_secrets_free(*out);
        *out = NULL;
    }
    return rc;
}
