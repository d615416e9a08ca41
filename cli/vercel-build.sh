#!/usr/bin/env bash
# The project's two hooks in Vercel's build, named in vercel.json:
#
#   installCommand  `bash cli/vercel-build.sh install`
#       What building the `gcbb` tool needs on Vercel's build image (Amazon Linux 2023, whose
#       package manager is dnf): libclang, for the Postgres parser pg_query behind the
#       migration lint. The image ships gcc but no clang.
#   buildCommand    `bash cli/vercel-build.sh migrate`
#       `gcbb db deploy` (its lint gate first) against this deployment's database, before the
#       deployment goes live: the seed's `prisma migrate deploy` on every push. A failed
#       migration fails the build, so a deployment never serves a schema it doesn't match.
#
# The functions themselves are built by Vercel's Rust builder (`cargo build --release --bin
# <function>`, one per api/*.rs); nothing here touches them.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'gcbb: %s\n' "$*"; }

install_build_needs() {
  if ! command -v dnf >/dev/null 2>&1; then
    log "not on Vercel's build image (no dnf): nothing to install"
    return
  fi
  if ldconfig -p 2>/dev/null | grep -q 'libclang'; then
    log "libclang present"
    return
  fi
  log "installing clang-devel (libclang for pg_query)"
  dnf install -y -q clang-devel
}

# Vercel's Rust builder installs a toolchain with rustup when there is none; this hook may run
# before it, so it does the same.
ensure_cargo() {
  if command -v cargo >/dev/null 2>&1; then
    return
  fi
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    return
  fi
  log "installing a Rust toolchain (rustup, minimal profile)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
}

migrate() {
  # The order `gcbb db` itself reads them in: the direct URL first (advisory locks and
  # lock_timeout need a session of their own; Neon's integration sets DATABASE_URL_UNPOOLED).
  local var=""
  for candidate in DATABASE_URL_UNPOOLED DIRECT_URL DATABASE_URL; do
    if [ -n "${!candidate:-}" ]; then
      var=$candidate
      break
    fi
  done
  local env_name="${VERCEL_ENV:-local}"
  if [ -z "$var" ]; then
    log "no database URL in this ${env_name} build (DATABASE_URL_UNPOOLED, DIRECT_URL, DATABASE_URL): migrations skipped"
    return 0
  fi
  log "applying pending migrations to \$${var} (${env_name} build)"
  ensure_cargo
  # The debug profile: the tool runs once per build, and it compiles in a fraction of the
  # release profile's time.
  cargo run --locked --quiet --package gcbb-cli --bin gcbb -- db deploy
}

case "${1:-}" in
  install) install_build_needs ;;
  migrate) migrate ;;
  *)
    echo "usage: $0 install|migrate" >&2
    exit 64
    ;;
esac
