variable "name_prefix" {
  description = "Prefix of every name (koumpa-ENV)"
  type        = string
}

variable "function_name" {
  description = "daily-bonus's deployed name"
  type        = string
}

variable "function_arn" {
  description = "daily-bonus's ARN"
  type        = string
}

variable "recovery_schedule" {
  description = "How often daily-bonus recovers generations whose lease ran out (an EventBridge schedule expression)"
  type        = string
  default     = "rate(5 minutes)"
}

variable "tags" {
  description = "Tags on every resource of the module"
  type        = map(string)
  default     = {}
}
