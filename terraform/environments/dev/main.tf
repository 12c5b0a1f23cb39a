# One Koumpa environment. dev, staging and prod have the same main.tf, variables.tf and
# outputs.tf (staging's and prod's are links to dev's; `make test` checks that they are the
# same): they differ only in their terraform.tfvars (copy
# terraform.tfvars.example; the real one is git-ignored) and in the state key given to init:
#
#   terraform init -backend-config=bucket=STATE_BUCKET -backend-config=key=koumpa/ENV/terraform.tfstate \
#     -backend-config=region=REGION
#
# The state: S3 with native locking (use_lockfile), in the bucket terraform/backend.tf makes.

terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }
  backend "s3" {
    use_lockfile = true
    encrypt      = true
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      Project     = "koumpa"
      Environment = var.environment
    }
  }
}

locals {
  name_prefix = "koumpa-${var.environment}"
  tags        = { Service = "koumpa" }

  # The dashboard's URL as the browser has it (the SPA signs in with redirect_uri = origin + path,
  # so with the "/"): Stripe's return URLs and the mail links (KOUMPA_PUBLIC_URL), the Cognito
  # callback and sign-out URLs, an API origin. From the variables, not module.storage.dashboard_url:
  # that would be a cycle (the dashboard's CSP names generate-app's function URL, and the
  # function gets this URL).
  dashboard_url = var.dashboard_domain != "" ? "https://${var.dashboard_domain}/" : (
    var.dashboard_url != "" ? "${trimsuffix(var.dashboard_url, "/")}/" : ""
  )
}

# Without dashboard_domain the dashboard's *.cloudfront.net name is known after the first apply.
check "dashboard_url" {
  assert {
    condition     = local.dashboard_url != ""
    error_message = "Set dashboard_url to `terraform output dashboard_url` (or set dashboard_domain) and apply again: until then Stripe's return URLs point at the API and Cognito has no callback URL for the dashboard."
  }
}

module "database" {
  source              = "../../modules/database"
  table_prefix        = "${local.name_prefix}-"
  deletion_protection = var.deletion_protection
  tags                = local.tags
}

module "auth" {
  source                  = "../../modules/auth"
  name_prefix             = local.name_prefix
  hosted_ui_domain_prefix = var.hosted_ui_domain_prefix
  dashboard_url           = local.dashboard_url
  callback_urls           = var.auth_callback_urls
  logout_urls             = var.auth_logout_urls
  deletion_protection     = var.deletion_protection
  tags                    = local.tags
}

module "storage" {
  source                    = "../../modules/storage"
  name_prefix               = local.name_prefix
  bucket_name               = var.apps_bucket_name
  price_class               = var.cloudfront_price_class
  apps_domain               = var.apps_domain
  apps_certificate_arn      = var.apps_certificate_arn
  dashboard_domain          = var.dashboard_domain
  dashboard_certificate_arn = var.dashboard_certificate_arn
  api_url                   = module.api.api_url
  stream_url                = module.api.generate_app_stream_url
  hosted_ui_url             = module.auth.hosted_ui_url
  oauth_client_id           = module.auth.client_id
  tags                      = local.tags
}

module "api" {
  source                      = "../../modules/api"
  name_prefix                 = local.name_prefix
  table_prefix                = module.database.table_prefix
  table_arn                   = module.database.table_arn
  bucket_name                 = module.storage.bucket_name
  bucket_arn                  = module.storage.bucket_arn
  apps_url                    = module.storage.apps_url
  jwt_issuer                  = module.auth.issuer
  jwt_audience                = module.auth.client_id
  jwks_url                    = module.auth.jwks_url
  dashboard_url               = local.dashboard_url
  cors_allow_origins          = var.cors_allow_origins
  lambda_build_dir            = "${path.root}/../../../build/lambda"
  architecture                = var.architecture
  generate_app_memory_mb      = var.generate_app_memory_mb
  extra_environment           = var.function_environment
  log_retention_days          = var.log_retention_days
  throttling_rate_limit       = var.api_rate_limit
  throttling_burst_limit      = var.api_burst_limit
  alarm_actions               = var.alarm_actions
  secret_recovery_window_days = var.secret_recovery_window_days
  tags                        = local.tags
}

module "cron" {
  source        = "../../modules/cron"
  name_prefix   = local.name_prefix
  function_name = module.api.daily_bonus_function_name
  function_arn  = module.api.daily_bonus_function_arn
  tags          = local.tags
}
