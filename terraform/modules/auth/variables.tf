variable "name_prefix" {
  description = "Prefix of every name (koumpa-ENV)"
  type        = string
}

variable "hosted_ui_domain_prefix" {
  description = "The hosted UI's domain: https://PREFIX.auth.REGION.amazoncognito.com (unique in the region)"
  type        = string
}

variable "callback_urls" {
  description = "Where the hosted UI may send users back with a code (the dashboard)"
  type        = list(string)
}

variable "logout_urls" {
  description = "Where the hosted UI may send users after signing out"
  type        = list(string)
}

variable "deletion_protection" {
  description = "Refuse to delete the user pool"
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags on every resource of the module"
  type        = map(string)
  default     = {}
}
