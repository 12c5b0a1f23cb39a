variable "environment" {
  description = "dev, staging or prod: in every name (koumpa-ENV-...)"
  type        = string
  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod"
  }
}

variable "region" {
  description = "The AWS region"
  type        = string
}

variable "apps_bucket_name" {
  description = "The apps bucket (globally unique)"
  type        = string
}

variable "hosted_ui_domain_prefix" {
  description = "Cognito hosted UI domain prefix (unique in the region)"
  type        = string
}

variable "auth_callback_urls" {
  description = "More URLs the hosted UI may return to with a code (the dashboard's own is added): exact, no query or hash"
  type        = list(string)
  default     = []
}

variable "auth_logout_urls" {
  description = "More URLs the hosted UI may return to after signing out (the dashboard's own is added)"
  type        = list(string)
  default     = []
}

variable "cors_allow_origins" {
  description = "More origins allowed to call the API and the function URL (the dashboard's is added)"
  type        = list(string)
  default     = []
}

variable "deletion_protection" {
  description = "Protect the table and the user pool from deletion"
  type        = bool
  default     = true
}

variable "architecture" {
  description = "The functions' architecture: x86_64 or arm64"
  type        = string
  default     = "x86_64"
}

variable "generate_app_memory_mb" {
  description = "generate-app's memory"
  type        = number
  default     = 1024
}

variable "function_environment" {
  description = "Non-secret settings for every function (KOUMPA_MODEL, ...)"
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Log retention in days"
  type        = number
  default     = 30
}

variable "api_rate_limit" {
  description = "The API's steady requests per second"
  type        = number
  default     = 100
}

variable "api_burst_limit" {
  description = "The API's burst"
  type        = number
  default     = 200
}

variable "alarm_actions" {
  description = "SNS topic ARNs for the alarms"
  type        = list(string)
  default     = []
}

variable "secret_recovery_window_days" {
  description = "Recovery window of deleted secrets (0 in dev: delete at once)"
  type        = number
  default     = 30
}

variable "cloudfront_price_class" {
  description = "CloudFront price class of the apps origin"
  type        = string
  default     = "PriceClass_100"
}

variable "apps_domain" {
  description = "Each app on its own origin: the apps' parent domain (apps.example.com; DNS *.apps.example.com to the apps distribution); empty: one apps origin"
  type        = string
  default     = ""
}

variable "apps_certificate_arn" {
  description = "ACM certificate in us-east-1 for *.apps_domain (when apps_domain is set)"
  type        = string
  default     = ""
}

variable "dashboard_domain" {
  description = "The dashboard's domain (app.example.com; DNS to the dashboard distribution); empty: its *.cloudfront.net"
  type        = string
  default     = ""
}

variable "dashboard_certificate_arn" {
  description = "ACM certificate in us-east-1 for dashboard_domain (when it is set)"
  type        = string
  default     = ""
}

variable "dashboard_url" {
  description = "Without dashboard_domain: the dashboard's URL once known (`terraform output dashboard_url` after the first apply); ignored when dashboard_domain is set"
  type        = string
  default     = ""
}
