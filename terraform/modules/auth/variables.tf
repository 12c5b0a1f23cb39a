variable "name_prefix" {
  description = "Prefix of every name (koumpa-ENV)"
  type        = string
}

variable "hosted_ui_domain_prefix" {
  description = "The hosted UI's domain: https://PREFIX.auth.REGION.amazoncognito.com (unique in the region)"
  type        = string
}

variable "dashboard_url" {
  description = "The dashboard's URL (https://app.example.com/): its redirect_uri and logout_uri (location.origin + location.pathname), added to the callback and sign-out URLs; empty: only those given"
  type        = string
  default     = ""
}

variable "callback_urls" {
  description = "More URLs the hosted UI may send users back to with a code (exact: no query or hash)"
  type        = list(string)
  default     = []
}

variable "logout_urls" {
  description = "More URLs the hosted UI may send users to after signing out"
  type        = list(string)
  default     = []
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
