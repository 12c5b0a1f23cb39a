#!/usr/bin/env bash
# Lints docs/api/openapi.yaml with Redocly's OpenAPI linter (recommended rules,
# configured in redocly.yaml), and checks that every route the server has is
# documented (and nothing undocumented is claimed).
set -euo pipefail
cd "$(dirname "$0")/.."
npx --no-install redocly lint docs/api/openapi.yaml --format=stylish
node tests/check-routes-documented.mjs
