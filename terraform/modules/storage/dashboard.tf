# The dashboard (src/web: plain HTML, CSS and JavaScript modules, no build step) on AWS: its files
# under web/ in the apps bucket (scripts/deploy-dashboard.sh syncs them), served by a CloudFront
# distribution of its own at var.dashboard_domain: never on the apps' origin, so no generated app
# can reach the dashboard's storage (where the token is kept). Routing in the dashboard is by hash
# (#/projects/...), so every URL is a file and no rewrite is needed; / is index.html.
#
# web/config.json, read by the dashboard at start (the same shape `koumpa serve` gives at
# /config.json), is written by Terraform from the other modules' outputs: the API's base URL, the
# generate-app function URL for the streams, the apps URL and the Cognito hosted UI. The dashboard
# sends its Content-Security-Policy here (koumpa serve builds the same one, src/api/csp.c).

locals {
  dashboard_prefix = "web/"
  dashboard_url    = var.dashboard_domain != "" ? "https://${var.dashboard_domain}" : "https://${aws_cloudfront_distribution.dashboard.domain_name}"
  stream_base      = trimsuffix(var.stream_url, "/")
  oauth = var.hosted_ui_url == "" ? null : {
    authorize_url = "${var.hosted_ui_url}/oauth2/authorize"
    token_url     = "${var.hosted_ui_url}/oauth2/token"
    client_id     = var.oauth_client_id
    scopes        = "openid email"
    logout_url    = "${var.hosted_ui_url}/logout"
  }
  dashboard_config = {
    api_base    = var.api_url
    stream_base = local.stream_base
    apps_url    = local.apps_url
    oauth       = local.oauth
  }
  # CSP source expressions: origins, the apps as *.DOMAIN when each app has its own origin.
  apps_frame_src = local.own_origins ? "https://*.${var.apps_domain}" : "https://${aws_cloudfront_distribution.apps.domain_name}"
  dashboard_csp = join("; ", [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    join(" ", compact(["connect-src 'self'", var.api_url, local.stream_base, var.hosted_ui_url])),
    "frame-src ${local.apps_frame_src}",
    join(" ", compact(["form-action 'self'", var.hosted_ui_url])),
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ])
}

resource "aws_s3_object" "dashboard_config" {
  bucket        = aws_s3_bucket.apps.id
  key           = "${local.dashboard_prefix}config.json"
  content       = jsonencode(local.dashboard_config)
  content_type  = "application/json"
  cache_control = "no-cache"
  tags          = var.tags
}

resource "aws_cloudfront_response_headers_policy" "dashboard" {
  name    = "${var.name_prefix}-dashboard"
  comment = "The dashboard's CSP: its own files, the API, the apps in frames, nothing inline"

  security_headers_config {
    content_security_policy {
      content_security_policy = local.dashboard_csp
      override                = true
    }
    content_type_options {
      override = true
    }
    frame_options {
      frame_option = "DENY"
      override     = true
    }
    referrer_policy {
      referrer_policy = "no-referrer"
      override        = true
    }
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = false
      override                   = true
    }
  }
}

resource "aws_cloudfront_distribution" "dashboard" {
  enabled             = true
  comment             = "${var.name_prefix} dashboard"
  is_ipv6_enabled     = true
  price_class         = var.price_class
  http_version        = "http2and3"
  default_root_object = "index.html"
  aliases             = var.dashboard_domain != "" ? [var.dashboard_domain] : []

  origin {
    origin_id                = "dashboard-files"
    domain_name              = aws_s3_bucket.apps.bucket_regional_domain_name
    origin_path              = "/web"
    origin_access_control_id = aws_cloudfront_origin_access_control.apps.id
  }

  # The objects carry Cache-Control: no-cache (deploy-dashboard.sh): CloudFront revalidates,
  # a deploy shows at once.
  default_cache_behavior {
    target_origin_id           = "dashboard-files"
    viewer_protocol_policy     = "redirect-to-https"
    allowed_methods            = ["GET", "HEAD"]
    cached_methods             = ["GET", "HEAD"]
    compress                   = true
    cache_policy_id            = data.aws_cloudfront_cache_policy.optimized.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.dashboard.id
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = var.dashboard_domain == ""
    acm_certificate_arn            = var.dashboard_domain != "" ? var.dashboard_certificate_arn : null
    ssl_support_method             = var.dashboard_domain != "" ? "sni-only" : null
    minimum_protocol_version       = var.dashboard_domain != "" ? "TLSv1.2_2021" : null
  }

  tags = var.tags
}
