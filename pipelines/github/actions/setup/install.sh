#!/usr/bin/env bash
# Puts the switchyard executables on the job's PATH (GITHUB_PATH), from
#   SWITCHYARD_BIN_DIR   a folder that already holds them (built earlier in the job), or
#   SWITCHYARD_RELEASE   a release tag, e.g. v0.1.0: the tarball `make dist` made for this
#                        runner's architecture, checked against the release's SHA256SUMS.
# SWITCHYARD_REPOSITORY names the repository whose releases to use.
set -euo pipefail

say() { printf 'switchyard setup: %s\n' "$*" >&2; }

if [[ -n ${SWITCHYARD_BIN_DIR:-} ]]; then
  dir=$(cd "$SWITCHYARD_BIN_DIR" && pwd) || { say "bin-dir $SWITCHYARD_BIN_DIR does not exist"; exit 2; }
  say "using the executables in $dir"
  echo "$dir" >>"$GITHUB_PATH"
  exit 0
fi

release=${SWITCHYARD_RELEASE:?set the version input (a release tag) or bin-dir}
repository=${SWITCHYARD_REPOSITORY:-switchyard/switchyard}
case $(uname -m) in
  x86_64 | amd64) target=x86_64-unknown-linux-musl ;;
  aarch64 | arm64) target=aarch64-unknown-linux-musl ;;
  *) say "no switchyard build for $(uname -m)"; exit 2 ;;
esac
version=${release#v}
name="switchyard-$version-$target"
home="${RUNNER_TOOL_CACHE:-$HOME/.cache}/switchyard/$version/$target"

if [[ ! -x $home/$name/bin/shift-weight ]]; then
  base="${GITHUB_SERVER_URL:-https://github.com}/$repository/releases/download/$release"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  say "downloading $name.tar.gz from $repository $release"
  curl --fail --silent --show-error --location --retry 3 -o "$work/$name.tar.gz" "$base/$name.tar.gz"
  curl --fail --silent --show-error --location --retry 3 -o "$work/SHA256SUMS" "$base/SHA256SUMS"
  (cd "$work" && grep " $name.tar.gz\$" SHA256SUMS | sha256sum -c --quiet -) \
    || { say "$name.tar.gz does not match the release's SHA256SUMS"; exit 3; }
  mkdir -p "$home"
  tar -C "$home" -xzf "$work/$name.tar.gz"
fi
say "installed $("$home/$name/bin/shift-weight" --version)"
echo "$home/$name/bin" >>"$GITHUB_PATH"
