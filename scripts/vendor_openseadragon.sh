#!/usr/bin/env bash
# Vendor OpenSeadragon (BSD-3-Clause) from the npm registry into the package, with its licence: the viewer page
# gpfm writes must open offline from disk, so the library ships inside gpfm. Run again to update the version;
# npm verifies the tarball against the registry's sha512 integrity, recorded here in VERSION.
set -euo pipefail
VERSION=${1:-6.1.1}
cd "$(dirname "$0")/.."
DEST=src/gpfm/wsi/vendor/openseadragon
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack "openseadragon@$VERSION" --silent >/dev/null)
INTEGRITY=$(npm view "openseadragon@$VERSION" dist.integrity)
tar -xzf "$TMP/openseadragon-$VERSION.tgz" -C "$TMP"
mkdir -p "$DEST"
cp "$TMP/package/build/openseadragon/openseadragon.min.js" "$DEST/"
cp "$TMP/package/LICENSE.txt" "$DEST/LICENSE.txt"
printf 'openseadragon %s (npm)\nintegrity %s\nsha256 %s\n' "$VERSION" "$INTEGRITY" \
  "$(sha256sum "$DEST/openseadragon.min.js" | cut -d' ' -f1)" > "$DEST/VERSION"
echo "vendored openseadragon $VERSION into $DEST"
