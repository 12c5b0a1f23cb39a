output "bucket_name" {
  description = "The apps bucket"
  value       = aws_s3_bucket.apps.id
}

output "bucket_arn" {
  description = "The apps bucket's ARN"
  value       = aws_s3_bucket.apps.arn
}

output "apps_url" {
  description = "The apps origin (KOUMPA_APPS_URL): https://{project}.APPS_DOMAIN when each app has its own origin"
  value       = local.apps_url
}

output "dashboard_url" {
  description = "The dashboard"
  value       = local.dashboard_url
}

output "dashboard_s3_uri" {
  description = "Where scripts/deploy-dashboard.sh puts src/web"
  value       = "s3://${aws_s3_bucket.apps.id}/${local.dashboard_prefix}"
}

output "dashboard_distribution_id" {
  description = "The dashboard's distribution (for invalidations)"
  value       = aws_cloudfront_distribution.dashboard.id
}

output "distribution_id" {
  description = "The CloudFront distribution (for invalidations)"
  value       = aws_cloudfront_distribution.apps.id
}
