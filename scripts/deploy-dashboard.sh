#!/usr/bin/env bash
# Puts the dashboard (src/web: HTML, CSS, JavaScript modules, no build step) where the AWS setup
# serves it: s3://BUCKET/web/, behind the dashboard's CloudFront distribution
# (terraform/modules/storage/dashboard.tf; README, "Deploy to AWS").
#   scripts/deploy-dashboard.sh S3_URI [DISTRIBUTION_ID]
#   S3_URI:          terraform output -raw dashboard_s3_uri          (s3://BUCKET/web/)
#   DISTRIBUTION_ID: terraform output -raw dashboard_distribution_id (then /* is invalidated)
# Every file is sent with its Content-Type set here (not guessed: a module script must be
# text/javascript) and Cache-Control: no-cache, so browsers revalidate and a deploy shows at once;
# a file whose type is not known stops the deploy. Files gone from src/web are deleted, except
# config.json, which Terraform writes (API URL, streams, apps URL, Cognito). Needs the AWS CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=${1:?usage: scripts/deploy-dashboard.sh S3_URI [DISTRIBUTION_ID]}
dist=${2:-}
src=${KOUMPA_WEB_DIR:-src/web}
case $dest in
s3://?*/) ;;
*)
    echo "deploy-dashboard: S3_URI must be s3://BUCKET/PREFIX/ (terraform output -raw dashboard_s3_uri), not '$dest'" >&2
    exit 2
    ;;
esac
if [[ ! -f $src/index.html ]]; then
    echo "deploy-dashboard: $src/index.html is missing: run from a tree with the dashboard" >&2
    exit 2
fi

types=(
    "html|text/html; charset=utf-8"
    "css|text/css; charset=utf-8"
    "js|text/javascript; charset=utf-8"
    "mjs|text/javascript; charset=utf-8"
    "json|application/json"
    "svg|image/svg+xml"
    "png|image/png"
    "ico|image/x-icon"
    "webmanifest|application/manifest+json"
    "woff2|font/woff2"
    "txt|text/plain; charset=utf-8"
)
known=()
for t in "${types[@]}"; do known+=(-name "*.${t%%|*}" -o); done
unknown=$(find "$src" -type f ! \( "${known[@]}" -false \) | sort)
if [[ -n $unknown ]]; then
    echo "deploy-dashboard: no Content-Type known for: $unknown (add it to scripts/deploy-dashboard.sh)" >&2
    exit 2
fi

for t in "${types[@]}"; do
    aws s3 sync "$src" "$dest" --only-show-errors --exclude '*' --include "*.${t%%|*}" --exclude config.json \
        --content-type "${t#*|}" --cache-control no-cache
done
# what src/web no longer has (config.json is Terraform's)
aws s3 sync "$src" "$dest" --only-show-errors --delete --exclude config.json --cache-control no-cache
if [[ -n $dist ]]; then
    aws cloudfront create-invalidation --distribution-id "$dist" --paths '/*' --output text --query Invalidation.Id
fi
echo "deploy-dashboard: $src -> $dest"
