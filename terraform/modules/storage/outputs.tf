output "bucket_name" {
  description = "The apps bucket"
  value       = aws_s3_bucket.apps.id
}

output "bucket_arn" {
  description = "The apps bucket's ARN"
  value       = aws_s3_bucket.apps.arn
}

output "apps_url" {
  description = "The apps origin (KOUMPA_APPS_URL)"
  value       = "https://${aws_cloudfront_distribution.apps.domain_name}"
}

output "distribution_id" {
  description = "The CloudFront distribution (for invalidations)"
  value       = aws_cloudfront_distribution.apps.id
}
