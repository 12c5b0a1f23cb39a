variable "name_prefix" {
  description = "Prefix of every name (koumpa-ENV)"
  type        = string
}

variable "table_prefix" {
  description = "KOUMPA_DYNAMODB_TABLE_PREFIX (the database module's)"
  type        = string
}

variable "table_arn" {
  description = "The table's ARN"
  type        = string
}

variable "bucket_name" {
  description = "The apps bucket (KOUMPA_S3_BUCKET)"
  type        = string
}

variable "bucket_arn" {
  description = "The apps bucket's ARN"
  type        = string
}

variable "apps_url" {
  description = "The apps origin (KOUMPA_APPS_URL): the CloudFront distribution"
  type        = string
}

variable "jwt_issuer" {
  description = "The Cognito user pool's issuer URL"
  type        = string
}

variable "jwt_audience" {
  description = "The Cognito app client id"
  type        = string
}

variable "jwks_url" {
  description = "The user pool's JWKS URL"
  type        = string
}

variable "dashboard_url" {
  description = "The dashboard's URL (https://app.example.com/): KOUMPA_PUBLIC_URL (Stripe's return URLs, the mail links) and an allowed origin; empty: not known yet (the API's own URL stands in)"
  type        = string
  default     = ""
}

variable "cors_allow_origins" {
  description = "More origins allowed to call the API and the function URL (the dashboard's is added)"
  type        = list(string)
  default     = []
}

variable "lambda_build_dir" {
  description = "Where scripts/build-all-lambdas.sh put NAME/function.zip"
  type        = string
}

variable "architecture" {
  description = "x86_64 (built and tested) or arm64"
  type        = string
  default     = "x86_64"
}

variable "generate_app_memory_mb" {
  description = "generate-app's memory (its CPU share grows with it)"
  type        = number
  default     = 1024
}

variable "generate_app_timeout_s" {
  description = "generate-app's timeout: a generation's total timeout must fit inside, with room to settle"
  type        = number
  default     = 900
}

variable "extra_environment" {
  description = "More settings for every function (KOUMPA_MODEL, KOUMPA_LLM_PROVIDER, ...); never a secret"
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention of the functions' and the API's logs"
  type        = number
  default     = 30
}

variable "throttling_rate_limit" {
  description = "The API's steady requests per second"
  type        = number
  default     = 100
}

variable "throttling_burst_limit" {
  description = "The API's burst"
  type        = number
  default     = 200
}

variable "alarm_actions" {
  description = "ARNs notified when an alarm fires or clears (an SNS topic); empty: none"
  type        = list(string)
  default     = []
}

variable "alarm_errors_threshold" {
  description = "Errors of one function in 5 minutes that raise its alarm"
  type        = number
  default     = 1
}

variable "alarm_throttles_threshold" {
  description = "Throttles of one function in 5 minutes that raise its alarm"
  type        = number
  default     = 1
}

variable "alarm_5xx_threshold" {
  description = "API 5xx answers in 5 minutes that raise the alarm"
  type        = number
  default     = 5
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can still be restored (0: deleted at once)"
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags on every resource of the module"
  type        = map(string)
  default     = {}
}
