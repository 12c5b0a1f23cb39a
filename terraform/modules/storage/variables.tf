variable "name_prefix" {
  description = "Prefix of every name (koumpa-ENV)"
  type        = string
}

variable "bucket_name" {
  description = "The apps bucket (KOUMPA_S3_BUCKET); globally unique"
  type        = string
}

variable "price_class" {
  description = "CloudFront price class"
  type        = string
  default     = "PriceClass_100"
}

variable "tags" {
  description = "Tags on every resource of the module"
  type        = map(string)
  default     = {}
}

# Each app on its own origin (README, "Each app on its own origin").
variable "apps_domain" {
  description = "The apps' parent domain (apps.example.com: each app at https://prj-ID.apps.example.com, the distribution takes *.apps.example.com); empty: one apps origin, each app under /{project}/"
  type        = string
  default     = ""
}

variable "apps_certificate_arn" {
  description = "ACM certificate (us-east-1) for *.apps_domain; required when apps_domain is set"
  type        = string
  default     = ""
  validation {
    condition     = var.apps_domain == "" || var.apps_certificate_arn != ""
    error_message = "apps_certificate_arn (an ACM certificate in us-east-1 for *.apps_domain) is required when apps_domain is set"
  }
}

# The dashboard (dashboard.tf).
variable "dashboard_domain" {
  description = "The dashboard's domain (app.example.com); empty: the distribution's own *.cloudfront.net"
  type        = string
  default     = ""
}

variable "dashboard_certificate_arn" {
  description = "ACM certificate (us-east-1) for dashboard_domain; required when dashboard_domain is set"
  type        = string
  default     = ""
  validation {
    condition     = var.dashboard_domain == "" || var.dashboard_certificate_arn != ""
    error_message = "dashboard_certificate_arn (an ACM certificate in us-east-1) is required when dashboard_domain is set"
  }
}

variable "api_url" {
  description = "The API's base URL (config.json api_base)"
  type        = string
}

variable "stream_url" {
  description = "generate-app's function URL (config.json stream_base)"
  type        = string
}

variable "hosted_ui_url" {
  description = "The Cognito hosted UI's base URL (config.json oauth); empty: local accounts only"
  type        = string
  default     = ""
}

variable "oauth_client_id" {
  description = "The Cognito app client the dashboard signs in with"
  type        = string
  default     = ""
}
