#!/usr/bin/env bash
# make dist: static musl executables of every step, shell completions and man
# pages generated from the clap definitions, one tarball per target and a
# SHA256SUMS file over everything in dist/.
#
#   dist/<target>/<step>                         the executables, static
#   dist/completions/{bash,zsh,fish}/            from `<step> --generate KIND DIR`
#   dist/man/man1/                               one page per command and subcommand
#   dist/switchyard-<version>-<target>.tar.gz    bin/, completions/, man/ of one target
#   dist/SHA256SUMS                              `cd dist && sha256sum -c SHA256SUMS`
#
# Targets: x86_64-unknown-linux-musl. DIST_AARCH64=1 adds
# aarch64-unknown-linux-musl, when its Rust std (rustup target add
# aarch64-unknown-linux-musl) and an aarch64 C compiler (apt
# gcc-aarch64-linux-gnu; ring and aws-lc-sys compile C) are present; that path
# is not yet verified end to end. DIST_TARGETS overrides the list.
set -euo pipefail

cd "$(dirname "$0")/.."
DIST=${DIST:-dist}
CARGO=${CARGO:-cargo}
X86=x86_64-unknown-linux-musl
ARM=aarch64-unknown-linux-musl

say() { printf 'dist: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

installed_targets() { rustup target list --installed 2>/dev/null || true; }

ensure_x86_toolchain() {
  if ! installed_targets | grep -qx "$X86"; then
    say "adding the Rust standard library for $X86"
    rustup target add "$X86" || die "cannot add $X86 (rustup target add $X86 failed); install it and run make dist again"
  fi
  if ! command -v x86_64-linux-musl-gcc >/dev/null 2>&1 && ! command -v musl-gcc >/dev/null 2>&1; then
    say "installing musl-tools (ring and aws-lc-sys compile C against musl)"
    { apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null; } \
      || die "cannot install musl-tools; install a musl C compiler (musl-gcc) and run make dist again"
  fi
}

arm_possible() {
  installed_targets | grep -qx "$ARM" && command -v aarch64-linux-gnu-gcc >/dev/null 2>&1
}

if [[ -n ${DIST_TARGETS:-} ]]; then
  read -r -a targets <<<"$DIST_TARGETS"
else
  targets=("$X86")
  if [[ ${DIST_AARCH64:-} == 1 ]]; then
    arm_possible || die "DIST_AARCH64=1 needs 'rustup target add $ARM' and the gcc-aarch64-linux-gnu package"
    targets+=("$ARM")
  else
    say "building $X86 only; DIST_AARCH64=1 adds $ARM"
  fi
fi

# The executables to ship: every bin target of every package but the tests'.
mapfile -t bins < <("$CARGO" metadata --no-deps --format-version 1 | python3 -c '
import json, sys
meta = json.load(sys.stdin)
for package in meta["packages"]:
    if package["name"] == "switchyard-tests":
        continue
    for target in package["targets"]:
        if "bin" in target["kind"]:
            print(target["name"])
')
version=$("$CARGO" metadata --no-deps --format-version 1 \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "switchyard"))')
say "version $version; executables: ${bins[*]}; targets: ${targets[*]}"

rm -rf "$DIST"
mkdir -p "$DIST"

for target in "${targets[@]}"; do
  case $target in
    "$X86")
      ensure_x86_toolchain
      command -v x86_64-linux-musl-gcc >/dev/null 2>&1 || export CC_x86_64_unknown_linux_musl=musl-gcc
      ;;
    "$ARM")
      export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
      export AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
      ;;
  esac
  say "building $target (release, static)"
  "$CARGO" build --release --locked --workspace --exclude switchyard-tests --bins --target "$target"
  mkdir -p "$DIST/$target"
  for bin in "${bins[@]}"; do
    exe="target/$target/release/$bin"
    [[ -x $exe ]] || die "$exe was not built"
    # Static means no program interpreter: it runs on any Linux of its architecture.
    if readelf -lW "$exe" | grep -q 'Requesting program interpreter'; then
      die "$exe is dynamically linked"
    fi
    install -m 0755 "$exe" "$DIST/$target/$bin"
  done
done

# Completions and man pages come from the executables themselves; any target
# this machine can run will do (they are the same for every architecture).
runner="$DIST/$X86"
[[ -d $runner ]] || runner="$DIST/${targets[0]}"
for bin in "${bins[@]}"; do
  for kind in bash zsh fish; do
    "$runner/$bin" --generate "$kind" "$DIST/completions/$kind" >/dev/null
  done
  "$runner/$bin" --generate man "$DIST/man/man1" >/dev/null
done

for target in "${targets[@]}"; do
  name="switchyard-$version-$target"
  stage=$(mktemp -d)
  mkdir -p "$stage/$name/bin"
  cp "$DIST/$target/"* "$stage/$name/bin/"
  cp -r "$DIST/completions" "$DIST/man" "$stage/$name/"
  cp README.md "$stage/$name/" 2>/dev/null || true
  tar -C "$stage" --owner=0 --group=0 --sort=name -czf "$DIST/$name.tar.gz" "$name"
  rm -rf "$stage"
done

(cd "$DIST" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
(cd "$DIST" && sha256sum --quiet -c SHA256SUMS)
say "done: $(find "$DIST" -type f | wc -l) files in $DIST/"
ls -l "$DIST"/*.tar.gz "$DIST"/*/ 2>/dev/null | sed 's/^/  /' >&2
