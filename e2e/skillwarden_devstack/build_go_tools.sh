#!/usr/bin/env bash
# Builds the Go test binaries (kube-apiserver, opa, helm) into a version-keyed cache outside the
# checkout. Idempotent: a binary already in the cache is reused. Called by the dev-stack harness.
# Usage: build_go_tools.sh CACHE_DIR COMPONENT VERSION   (COMPONENT: kube-apiserver | opa | helm)
set -euo pipefail
cache=$1 component=$2 version=$3
out="$cache/bin/$component-$version"
[ -x "$out" ] && { echo "$out"; exit 0; }
work="$cache/build/$component-$version"
rm -rf "$work"; mkdir -p "$work" "$cache/bin"
cd "$work"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
case "$component" in
  kube-apiserver)
    # k8s.io/kubernetes requires its staging modules at v0.0.0, which the module proxy does not
    # serve; replace each with its published v0.X.Y twin (same minor/patch as v1.X.Y).
    staging_version="v0.${version#v1.}"
    go mod init skillwarden.local/kube-apiserver-build >/dev/null 2>&1
    go mod download -json "k8s.io/kubernetes@$version" > dl.json
    modfile=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' dl.json)
    {
      echo "require k8s.io/kubernetes $version"
      echo "replace ("
      sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$modfile" | while read -r mod; do
        echo "  $mod => $mod $staging_version"
      done
      echo ")"
    } >> go.mod
    cat > tools.go <<'GO'
//go:build tools
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
    go mod tidy -e >tidy.log 2>&1 || true
    go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version" \
      -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    ;;
  opa)
    GOBIN="$work/bin" go install -trimpath -ldflags "-s -w" "github.com/open-policy-agent/opa@$version"
    mv "$work/bin/opa" "$out.tmp"
    ;;
  helm)
    GOBIN="$work/bin" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$version"
    mv "$work/bin/helm" "$out.tmp"
    ;;
  *) echo "unknown component $component" >&2; exit 2 ;;
esac
mv "$out.tmp" "$out"
rm -rf "$work"
echo "$out"
