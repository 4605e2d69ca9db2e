#!/usr/bin/env bash
# Builds the Go interop program (this directory) in module mode, against the etcd client module
# pinned in go.mod (go.etcd.io/etcd/client/v3 v3.7.4) and the hashes in go.sum.
# Usage: interop/go/build.sh [OUTPUT]     (default OUTPUT: /tmp/middy-etcd-interop-go)
# Needs: Go 1.26 or newer on PATH (https://go.dev/dl/); on a cold module cache, the Go module
# proxy (GOPROXY, by default https://proxy.golang.org) to download the modules once.
set -euo pipefail
# Shell built-ins only up to the Go check, so a missing toolchain is reported as such.
case $0 in */*) here=${0%/*} ;; *) here=. ;; esac
here=$(cd "$here" && pwd)
out=${1:-/tmp/middy-etcd-interop-go}
case $out in /*) ;; *) out=$PWD/$out ;; esac
need=26 # minor version: go.mod says go 1.26
install_hint='install Go 1.26 or newer from https://go.dev/dl/ and put its bin directory on PATH'

if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: the Go toolchain (go) is not on PATH; $install_hint" >&2
  exit 1
fi
# Asked outside this directory and with GOTOOLCHAIN=local: next to go.mod an older go would
# otherwise try to download a newer toolchain instead of answering.
version=$(cd / && GOTOOLCHAIN=local go env GOVERSION 2>/dev/null) || version=
case $version in
  go1.*)
    minor=${version#go1.}
    minor=${minor%%[!0-9]*}
    if [ -z "$minor" ] || [ "$minor" -lt "$need" ]; then
      echo "build.sh: $(command -v go) is $version, older than go1.$need (go.mod needs it); $install_hint" >&2
      exit 1
    fi
    ;;
  devel*) ;; # a development toolchain: newer than any release it could be checked against
  *)
    echo "build.sh: $(command -v go) did not report its version (go env GOVERSION printed '$version'; Go before 1.16 prints nothing); $install_hint" >&2
    exit 1
    ;;
esac

# Module mode, this toolchain only (no automatic toolchain download), no VCS stamping (the tree
# may be dirty or not a checkout); -mod=readonly is the default, so go.sum must already be complete.
cd "$here"
export GOCACHE=${GOCACHE:-/tmp/middy-etcd-interop-go-cache}
if ! GOTOOLCHAIN=local GOFLAGS=-buildvcs=false go build -trimpath -o "$out" .; then
  echo "build.sh: go build failed; on a cold module cache it downloads go.etcd.io/etcd/client/v3 and its dependencies through the Go module proxy ($(GOTOOLCHAIN=local go env GOPROXY)), which must then be reachable" >&2
  exit 1
fi
echo "$out"
