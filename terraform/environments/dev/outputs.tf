output "api_url" {
  description = "The API's base URL (the dashboard's API)"
  value       = module.api.api_url
}

output "stripe_webhook_url" {
  description = "Give it to Stripe (Developers > Webhooks > Add endpoint)"
  value       = module.api.stripe_webhook_url
}

output "generate_app_stream_url" {
  description = "generate-app's streaming function URL"
  value       = module.api.generate_app_stream_url
}

output "apps_url" {
  description = "The apps origin (CloudFront): https://{project}.APPS_DOMAIN when each app has its own origin"
  value       = module.storage.apps_url
}

output "dashboard_url" {
  description = "The dashboard"
  value       = module.storage.dashboard_url
}

output "dashboard_s3_uri" {
  description = "Where scripts/deploy-dashboard.sh puts src/web"
  value       = module.storage.dashboard_s3_uri
}

output "dashboard_distribution_id" {
  description = "The dashboard's distribution (scripts/deploy-dashboard.sh invalidates it)"
  value       = module.storage.dashboard_distribution_id
}

output "cognito_hosted_ui_url" {
  description = "The hosted UI (sign-up, sign-in)"
  value       = module.auth.hosted_ui_url
}

output "cognito_user_pool_id" {
  description = "The user pool (add admins to its admin group)"
  value       = module.auth.user_pool_id
}

output "cognito_client_id" {
  description = "The dashboard's app client id"
  value       = module.auth.client_id
}

output "table_name" {
  description = "The DynamoDB table"
  value       = module.database.table_name
}

output "secret_names" {
  description = "The secrets to set with aws secretsmanager put-secret-value"
  value       = module.api.secret_names
}
