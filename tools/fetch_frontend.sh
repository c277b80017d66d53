#!/usr/bin/env bash
# Re-fetch the dashboard's vendored front-end library from the npm registry, for maintainers.
#
#   tools/fetch_frontend.sh            # the pinned version below
#   tools/fetch_frontend.sh 6.2.0      # another version; then update README.md's version line
#
# Copies the package's own prebuilt dist/echarts.min.js with its LICENSE and NOTICE (and the
# licence of the d3 code it includes) into src/streamfolio/dashboard/static/vendor/, and prints
# the files' SHA-256 for the README. Nothing is built: the file is the one npm serves.
# The dashboard loads only these copies at run time (no CDN). CI does not run this.
set -euo pipefail

version="${1:-6.1.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$root/src/streamfolio/dashboard/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
tarball="$(npm pack --silent "echarts@$version")"
tar -xzf "$tarball"
test "$(node -p "require('./package/package.json').license")" = "Apache-2.0"

mkdir -p "$vendor"
cp package/dist/echarts.min.js "$vendor/echarts.min.js"
cp package/LICENSE "$vendor/ECHARTS-LICENSE"
cp package/NOTICE "$vendor/ECHARTS-NOTICE"
cp package/licenses/LICENSE-d3 "$vendor/ECHARTS-LICENSE-d3"

echo "echarts $version from $tarball -> $vendor"
(cd "$vendor" && sha256sum echarts.min.js ECHARTS-LICENSE ECHARTS-NOTICE ECHARTS-LICENSE-d3)
