#!/usr/bin/env bash
# Runs the steps of deploy/Dockerfile by hand on a Debian bookworm host, for machines without a
# container engine (like the one this project is developed on): the same apt packages, the same
# cargo command, the same runtime layout, staged under a directory instead of an image layer.
# Then checks what the image would contain:
#   - the binary needs no shared library beyond what debian:bookworm-slim has (glibc, libgcc_s);
#     in particular libopus is linked statically;
#   - it runs as the image's non-root user (uid 10001);
#   - `mediabot healthcheck` (the image's HEALTHCHECK) exits 0 on 200 and non-zero otherwise;
#   - `mediabot deploy-facts` prints JSON.
#
# The apt package lists and the cargo command are read from deploy/Dockerfile, so the two
# cannot drift apart.
#
#   deploy/build-by-hand.sh                   release build (as the Dockerfile), stage, check
#   BUILD_PROFILE=dev deploy/build-by-hand.sh debug build (quicker; same checks)
#   STAGING_DIR=DIR                           where the image root is staged (default
#                                             target/deploy-staging/rootfs)
#   CARGO_TARGET_DIR                          honoured as usual (default target/)
# Idempotent. Runs as root (apt-get, chown) or as a user with sudo for apt only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dockerfile=deploy/Dockerfile
profile=${BUILD_PROFILE:-release}
staging=${STAGING_DIR:-$root/target/deploy-staging/rootfs}
target_dir=${CARGO_TARGET_DIR:-$root/target}
uid=10001

step() { echo "== build-by-hand: $*"; }

# --- what the Dockerfile says -------------------------------------------------------------------
# stage N's `apt-get install` packages, and the build stage's cargo command.
read_dockerfile() {
  python3 - "$dockerfile" "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
stages = re.split(r"(?m)^FROM\s", text)[1:]
what = sys.argv[2]
if what.startswith("apt:"):
    stage = stages[int(what[4:])]
    pkgs = []
    for m in re.finditer(r"apt-get install ([^&\n]*)", stage):
        pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    print(" ".join(pkgs))
elif what == "cargo":
    m = re.search(r"(cargo build [^&\n]*?)\s*(?:&&|\n)", stages[0])
    print(m.group(1).strip() if m else "")
PY
}
build_pkgs=$(read_dockerfile apt:0)
runtime_pkgs=$(read_dockerfile apt:1)
cargo_cmd=$(read_dockerfile cargo)
[ -n "$cargo_cmd" ] || { echo "no cargo build command in $dockerfile" >&2; exit 1; }
. /etc/os-release
step "host: $PRETTY_NAME (image stages: rust:1.95-bookworm, debian:bookworm-slim)"
[ "${VERSION_CODENAME:-}" = bookworm ] || echo "   warning: host is not bookworm; glibc may differ from the image"
step "rustc: $(rustc --version)"

# --- build stage: apt ---------------------------------------------------------------------------
missing=()
for p in $build_pkgs $runtime_pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "apt-get install ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  step "apt packages present: build [$build_pkgs] runtime [$runtime_pkgs]"
fi

# --- build stage: cargo -------------------------------------------------------------------------
if [ "$profile" = release ]; then
  cmd=$cargo_cmd
  out_dir=$target_dir/release
else
  cmd=${cargo_cmd/ --release/}
  out_dir=$target_dir/debug
fi
step "$cmd   (CARGO_TARGET_DIR=$target_dir)"
start=$(date +%s)
$cmd
step "cargo build took $(($(date +%s) - start)) s"

# --- runtime stage: layout ----------------------------------------------------------------------
step "staging the runtime image root in $staging"
rm -rf "$staging"
install -D -m 0755 "$out_dir/mediabot" "$staging/usr/local/bin/mediabot"
install -d -m 0755 "$staging/etc/mediabot"
if [ "$(id -u)" = 0 ]; then
  install -d -o $uid -g $uid -m 0750 "$staging/var/lib/mediabot" "$staging/var/lib/mediabot/recordings"
else
  install -d -m 0750 "$staging/var/lib/mediabot" "$staging/var/lib/mediabot/recordings"
fi
printf 'mediabot:x:%d:%d::/var/lib/mediabot:/usr/sbin/nologin\n' $uid $uid >"$staging/etc/passwd.mediabot"
bin=$staging/usr/local/bin/mediabot
ls -l "$bin"

# --- checks -------------------------------------------------------------------------------------
fail=0
check() { if "$@" >/dev/null; then echo "   ok    ${desc}"; else echo "   FAIL  ${desc}"; fail=1; fi; }

step "shared libraries the binary needs"
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort)
echo "$needed" | sed 's/^/   NEEDED /'
# What debian:bookworm-slim provides without extra packages (libc6, libgcc-s1).
allowed="ld-linux-x86-64.so.2 ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1"
extra=""
for lib in $needed; do
  case " $allowed " in *" $lib "*) ;; *) extra="$extra $lib" ;; esac
done
desc="only glibc/libgcc_s needed (runtime image installs no other library)${extra:+; extra:$extra}"
check test -z "$extra"

# The image runs as uid 10001; setpriv switches to it like USER 10001:10001 does.
as_user=()
if [ "$(id -u)" = 0 ]; then as_user=(setpriv --reuid=$uid --regid=$uid --clear-groups); fi

desc="\`mediabot version\` as uid $uid: $("${as_user[@]}" "$bin" version 2>&1 || true)"
check "${as_user[@]}" "$bin" version

desc="\`mediabot deploy-facts\` prints JSON"
check bash -c "\"$bin\" deploy-facts | python3 -m json.tool >/dev/null"

# HEALTHCHECK: a stand-in server on a free loopback port answers /healthz 200 and /readyz 503.
port_file=$(mktemp)
python3 - "$port_file" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/healthz" else 503
        self.send_response(code); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.timeout = 20
for _ in range(2):
    s.handle_request()
s.server_close()
PY
server_pid=$!
for _ in $(seq 50); do [ -s "$port_file" ] && break; sleep 0.1; done
port=$(cat "$port_file"); rm -f "$port_file"
desc="HEALTHCHECK command exits 0 when /healthz answers 200"
check "${as_user[@]}" "$bin" healthcheck --url "http://127.0.0.1:$port/healthz"
desc="HEALTHCHECK command exits non-zero on 503"
check bash -c "! ${as_user[*]} \"$bin\" healthcheck --url http://127.0.0.1:$port/readyz 2>/dev/null"
wait "$server_pid" 2>/dev/null || true   # it exits after those two requests
desc="HEALTHCHECK command exits non-zero when nothing listens"
check bash -c "! ${as_user[*]} \"$bin\" healthcheck --url http://127.0.0.1:$port/healthz --timeout-secs 1 2>/dev/null"

# The image's main command, when the binary has it: `run` with the Kubernetes base config,
# loopback addresses and a short grace, as uid 10001. Probes, metric names the autoscalers use,
# and a clean exit on SIGTERM.
# smoke_run TOML FULL: starts `mediabot run --config` with that TOML (the real config parser
# rejects unknown keys), loopback addresses and a short grace, as uid 10001; FULL=1 also checks
# /readyz and the metrics the autoscalers use. Always: healthy, then exit 0 on SIGTERM.
smoke_run() {
  local toml=$1 full=$2 smoke hp up dead run_pid rc metrics m
  smoke=$(mktemp -d)
  chmod 0755 "$smoke"
  sed "s|^dir = .*|dir = \"$smoke/recordings\"|" "$toml" >"$smoke/mediabot.toml"
  install -d -o $uid -g $uid "$smoke/recordings" 2>/dev/null || install -d "$smoke/recordings"
  hp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  up=$(python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  dead=http://127.0.0.1:9   # discard port: no Graph or identity provider is reachable here
  env MEDIABOT_SERVER_LISTEN=127.0.0.1:$hp MEDIABOT_MEDIA_UDP_PORT=$up \
    MEDIABOT_MEDIA_BIND_IP=127.0.0.1 MEDIABOT_MEDIA_PUBLIC_IP=127.0.0.1 \
    MEDIABOT_SERVER_PUBLIC_URL=http://127.0.0.1:$hp MEDIABOT_SERVER_SHUTDOWN_GRACE_SECS=5 \
    MEDIABOT_GRAPH_CLIENT_SECRET=smoke MEDIABOT_OPERATOR_TOKEN=smoke \
    MEDIABOT_GRAPH_BASE_URL=$dead/v1.0 MEDIABOT_GRAPH_AUTHORITY=$dead \
    MEDIABOT_GRAPH_OPENID_METADATA_URL=$dead/openid \
    "${as_user[@]}" "$bin" run --config "$smoke/mediabot.toml" >"$smoke/run.log" 2>&1 &
  run_pid=$!
  for _ in $(seq 100); do
    "$bin" healthcheck --url "http://127.0.0.1:$hp/healthz" --timeout-secs 1 >/dev/null 2>&1 && break
    kill -0 "$run_pid" 2>/dev/null || break
    sleep 0.2
  done
  desc="$toml: HEALTHCHECK command against \`mediabot run\` (/healthz)"
  check "$bin" healthcheck --url "http://127.0.0.1:$hp/healthz"
  if [ "$full" = 1 ]; then
    desc="$toml: /readyz answers 200 once started"
    check "$bin" healthcheck --url "http://127.0.0.1:$hp/readyz"
    metrics=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())" "http://127.0.0.1:$hp/metrics" 2>&1 || true)
    for m in mediabot_calls_active mediabot_streams_active; do
      desc="$toml: /metrics exports $m (the autoscalers' metric)"
      check grep -q "^$m" <<<"$metrics"
    done
  fi
  kill -TERM "$run_pid" 2>/dev/null || true
  rc=0; wait "$run_pid" || rc=$?
  desc="$toml: SIGTERM with no calls: drains and exits 0 (exit code $rc)"
  check test "$rc" = 0
  if [ "$fail" != 0 ]; then sed 's/^/   run.log: /' "$smoke/run.log" | tail -20; fi
  rm -rf "$smoke"
}

if "$bin" help run >/dev/null 2>&1; then
  step "smoke test of \`mediabot run --config\` with the shipped Kubernetes configs (loopback only)"
  smoke_run deploy/k8s/base/mediabot.toml 1
  for toml in deploy/k8s/overlays/*/mediabot.toml; do
    if [ -e "$toml" ]; then smoke_run "$toml" 0; fi
  done
else
  step "the binary has no \`run\` subcommand yet: smoke test of the main command skipped"
fi

if [ "$fail" != 0 ]; then
  step "FAILED"
  exit 1
fi
step "done: image root staged at $staging ($(du -sh "$staging" | cut -f1))"
