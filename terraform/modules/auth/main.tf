# auth - Cognito, Koumpa's identity provider on AWS (local sign-up and login are not routed there).
#
# Users sign in on the hosted UI; the dashboard is a public client using the authorization
# code flow with PKCE (no client secret: a browser cannot keep one; Cognito checks the
# code_challenge the client sends). The HTTP API's JWT authorizer and the generate-app function
# URL (which verifies the token itself: KOUMPA_JWT_ISSUER / KOUMPA_JWT_AUDIENCE / KOUMPA_JWKS_URL)
# accept this pool's tokens; members of the `admin` group reach /v1/admin/* (the group arrives
# in the `cognito:groups` claim). The dashboard's redirect_uri and logout_uri are its own URL
# (location.origin + location.pathname, no query or hash): var.dashboard_url is always allowed.

locals {
  callback_urls = distinct(compact(concat([var.dashboard_url], var.callback_urls)))
  logout_urls   = distinct(compact(concat([var.dashboard_url], var.logout_urls)))
}

resource "aws_cognito_user_pool" "main" {
  name                     = "${var.name_prefix}-users"
  username_attributes      = ["email"]
  auto_verified_attributes = ["email"]
  deletion_protection      = var.deletion_protection ? "ACTIVE" : "INACTIVE"

  password_policy {
    minimum_length                   = 12
    require_lowercase                = true
    require_uppercase                = true
    require_numbers                  = true
    require_symbols                  = false
    temporary_password_validity_days = 3
  }

  account_recovery_setting {
    recovery_mechanism {
      name     = "verified_email"
      priority = 1
    }
  }

  admin_create_user_config {
    allow_admin_create_user_only = false
  }

  tags = var.tags
}

resource "aws_cognito_user_pool_client" "web" {
  name         = "${var.name_prefix}-web"
  user_pool_id = aws_cognito_user_pool.main.id

  generate_secret                      = false
  allowed_oauth_flows_user_pool_client = true
  allowed_oauth_flows                  = ["code"]
  allowed_oauth_scopes                 = ["openid", "email", "profile"]
  supported_identity_providers         = ["COGNITO"]
  callback_urls                        = local.callback_urls
  logout_urls                          = local.logout_urls
  explicit_auth_flows                  = ["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
  prevent_user_existence_errors        = "ENABLED"
  enable_token_revocation              = true

  access_token_validity  = 60
  id_token_validity      = 60
  refresh_token_validity = 30
  token_validity_units {
    access_token  = "minutes"
    id_token      = "minutes"
    refresh_token = "days"
  }
}

resource "aws_cognito_user_group" "admin" {
  name         = "admin"
  user_pool_id = aws_cognito_user_pool.main.id
  description  = "Koumpa administrators: /v1/admin/*"
}

resource "aws_cognito_user_pool_domain" "hosted_ui" {
  domain       = var.hosted_ui_domain_prefix
  user_pool_id = aws_cognito_user_pool.main.id
}

data "aws_region" "current" {}
