#!/usr/bin/env bash
# Builds the Go interop program (this directory) from Debian's packaged etcd
# 3.4 sources in GOPATH mode.
# Usage: interop/go/build.sh [OUTPUT]     (default OUTPUT: /tmp/middy-etcd-interop-go)
# Needs: apt-get install -y golang-go golang-etcd-server-dev
set -euo pipefail
# Shell built-ins only up to the Go check, so a missing toolchain is reported as such.
case $0 in */*) here=${0%/*} ;; *) here=. ;; esac
here=$(cd "$here" && pwd)
out=${1:-/tmp/middy-etcd-interop-go}
case $out in /*) ;; *) out=$PWD/$out ;; esac
gopath=/usr/share/gocode
install_hint='install them with: apt-get install -y golang-go golang-etcd-server-dev (as root)'

if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: the Go toolchain (go) is not on PATH; $install_hint" >&2
  exit 1
fi
if [ ! -d "$gopath/src/go.etcd.io/etcd/clientv3/concurrency" ] || [ ! -d "$gopath/src/go.etcd.io/etcd/contrib/recipes" ]; then
  echo "build.sh: etcd 3.4's Go sources are not in $gopath/src/go.etcd.io/etcd; $install_hint" >&2
  exit 1
fi

# GOPATH mode: the packaged sources carry no module cache, and the build must not reach the network.
cd "$here"
GO111MODULE=off GOFLAGS= GOPATH="$gopath" GOCACHE=${GOCACHE:-/tmp/middy-etcd-interop-go-cache} \
  go build -o "$out" .
echo "$out"
