output "user_pool_id" {
  description = "The user pool's id"
  value       = aws_cognito_user_pool.main.id
}

output "client_id" {
  description = "The web client's id: the tokens' audience (aud in id tokens, client_id in access tokens)"
  value       = aws_cognito_user_pool_client.web.id
}

output "issuer" {
  description = "The tokens' issuer (KOUMPA_JWT_ISSUER)"
  value       = "https://${aws_cognito_user_pool.main.endpoint}"
}

output "jwks_url" {
  description = "The pool's signing keys (KOUMPA_JWKS_URL)"
  value       = "https://${aws_cognito_user_pool.main.endpoint}/.well-known/jwks.json"
}

output "hosted_ui_url" {
  description = "The hosted UI's base URL (/oauth2/authorize, /oauth2/token, /logout)"
  value       = "https://${aws_cognito_user_pool_domain.hosted_ui.domain}.auth.${data.aws_region.current.region}.amazoncognito.com"
}
