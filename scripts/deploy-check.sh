#!/usr/bin/env bash
# Validates deploy/ without a cluster or a container engine:
#   1. renders deploy/k8s/base and every deploy/k8s/overlays/* with `kubectl kustomize`;
#   2. validates every rendered object against the Kubernetes schemas (kubernetes-validate from
#      PyPI, strict, two Kubernetes versions); CRD objects without a bundled schema
#      (ServiceMonitor, KEDA ScaledObject) are checked structurally;
#   3. DRIFT: compares the manifests, deploy/Dockerfile and deploy/systemd with what the binary
#      says about itself (`mediabot deploy-facts`): env names, ports, probe paths, healthcheck,
#      entrypoint, grace periods (deploy/check/deploy_check.py);
#   4. SELF-TEST: runs the drift check on deliberately broken copies and requires each to fail.
#
# Usage (from anywhere): scripts/deploy-check.sh
#   MEDIABOT_BIN=/path/to/mediabot   use this binary for deploy-facts instead of `cargo run`
#   DEPLOY_CHECK_SELF_TEST=0         skip step 4
# Needs kubectl (with its built-in kustomize) and python3 >= 3.11. Creates the venv
# target/deploy-venv on first use (idempotent); later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

venv="$root/target/deploy-venv"
kv_version="1.37.0"
if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
  echo "== deploy-check: creating $venv (kubernetes-validate $kv_version)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$kv_version"
fi
command -v kubectl >/dev/null || { echo "deploy-check: kubectl not found" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mediabot() {
  if [ -n "${MEDIABOT_BIN:-}" ]; then
    "$MEDIABOT_BIN" "$@"
  else
    cargo run -q --locked -p mediabot -- "$@"
  fi
}
echo "== deploy-facts"
mediabot deploy-facts >"$work/facts.json"
# The subcommands the binary has, and `run`'s options, for the entrypoint checks.
mediabot --help >"$work/help.txt"
mediabot help run >"$work/help-run.txt" 2>&1 || true
"$venv/bin/python" -m json.tool "$work/facts.json" | head -c 2000 | sed 's/^/  /'
echo

# render DEPLOY_DIR OUT_DIR -> prints NAME=FILE arguments for the checker
render() {
  local deploy=$1 out=$2 dir name
  mkdir -p "$out"
  for dir in "$deploy/k8s/base" "$deploy"/k8s/overlays/*/; do
    dir=${dir%/}
    name=${dir#"$deploy/k8s/"}
    kubectl kustomize "$dir" >"$out/${name//\//_}.yaml"
    printf -- '--rendered %s=%s\n' "$name" "$out/${name//\//_}.yaml"
  done
}

echo "== kubectl kustomize"
mapfile -t rendered < <(render "$root/deploy" "$work/rendered")
for r in "${rendered[@]}"; do
  [ "$r" = "--rendered" ] && continue
  echo "  rendered ${r#--rendered }: $(grep -c '^kind:' "${r#*=}") objects"
done
# shellcheck disable=SC2206
rendered_args=(${rendered[@]})

"$venv/bin/python" "$root/deploy/check/deploy_check.py" \
  --facts "$work/facts.json" --help-dir "$work" --deploy-dir "$root/deploy" "${rendered_args[@]}"

# The unit's syntax and directives, by systemd itself (the binary is not installed here, so
# ExecStart points at /bin/true and the env file is made optional for this copy only).
if command -v systemd-analyze >/dev/null; then
  echo "== systemd-analyze verify deploy/systemd/mediabot.service"
  mkdir -p "$work/unit"
  sed -e 's|^ExecStart=[^ ]*|ExecStart=/bin/true|' -e 's|^EnvironmentFile=/|EnvironmentFile=-/|' \
    deploy/systemd/mediabot.service >"$work/unit/mediabot.service"
  if ! out=$(systemd-analyze verify "$work/unit/mediabot.service" 2>&1) || [ -n "$out" ]; then
    echo "$out" | sed 's/^/  /'
    echo "  FAIL  systemd-analyze verify reported problems" >&2
    exit 1
  fi
  echo "  ok    no warnings ($(systemctl --version | head -1))"
else
  echo "== systemd-analyze not installed: unit syntax not verified by systemd"
fi

if [ "${DEPLOY_CHECK_SELF_TEST:-1}" = 0 ]; then
  echo "== deploy-check: green (self-test skipped)"
  exit 0
fi

# Each case: a description, a command that breaks a copy of deploy/ (run inside the copy) or the
# facts, and a phrase the failure report must contain.
echo "== self-test: the drift check must fail on broken copies"
selftest_fail=0
case_no=0
run_case() {
  local what=$1 breaker=$2 expect=$3 schema=--no-schema
  [ "${4:-}" = with-schema ] && schema=""
  case_no=$((case_no + 1))
  local copy="$work/case$case_no"
  mkdir -p "$copy"
  cp -r "$root/deploy" "$copy/deploy"
  cp "$work/facts.json" "$copy/facts.json"
  (cd "$copy" && eval "$breaker")
  local args out rc
  mapfile -t args < <(render "$copy/deploy" "$copy/rendered")
  # shellcheck disable=SC2206
  args=(${args[@]})
  set +e
  out=$("$venv/bin/python" "$root/deploy/check/deploy_check.py" ${schema:+"$schema"} \
    --facts "$copy/facts.json" --help-dir "$work" --deploy-dir "$copy/deploy" "${args[@]}" 2>&1)
  rc=$?
  set -e
  if [ "$rc" -ne 0 ] && grep -q -- "FAIL .*$expect" <<<"$out"; then
    echo "  ok    broken copy rejected: $what"
  else
    echo "  FAIL  broken copy NOT rejected (rc=$rc, wanted a failure naming '$expect'): $what"
    selftest_fail=1
  fi
}
run_case "readiness probe path /readyz -> /ready" \
  "sed -i 's|path: /readyz|path: /ready|' deploy/k8s/base/statefulset.yaml" \
  "readinessProbe path"
run_case "Dockerfile EXPOSE 3478/udp -> 3479/udp" \
  "sed -i 's|EXPOSE 3478/udp|EXPOSE 3479/udp|' deploy/Dockerfile" \
  "EXPOSE"
run_case "Dockerfile CMD uses a subcommand the binary does not have" \
  "sed -i 's|CMD \\[\"run\"|CMD [\"serve\"|' deploy/Dockerfile" \
  "subcommand serve"
run_case "Dockerfile HEALTHCHECK runs another command" \
  "sed -i 's|\"mediabot\", \"healthcheck\"|\"curl\", \"-f\"|' deploy/Dockerfile" \
  "HEALTHCHECK"
run_case "misspelt env name in the systemd env file" \
  "sed -i 's|^MEDIABOT_MEDIA_PUBLIC_IP=|MEDIABOT_MEDIA_PUBLICIP=|' deploy/systemd/mediabot.env.example" \
  "MEDIABOT_MEDIA_PUBLICIP is read by the binary"
run_case "misspelt env name in the StatefulSet" \
  "sed -i 's|name: MEDIABOT_LOG$|name: MEDIABOT_LOGLEVEL|' deploy/k8s/base/statefulset.yaml" \
  "MEDIABOT_LOGLEVEL is read by the binary"
run_case "binary's default UDP port changed (facts 3478 -> 40000)" \
  "sed -i 's|\"udp_port\": *3478|\"udp_port\": 40000|' facts.json; sed -i '/^udp_port = /d' deploy/k8s/base/mediabot.toml deploy/k8s/overlays/example/mediabot.toml" \
  "container port media"
run_case "hostPort differs from the media port" \
  "sed -i 's|value: 3478|value: 3479|' deploy/k8s/components/udp-hostport/kustomization.yaml" \
  "hostPort = udp port"
run_case "terminationGracePeriodSeconds shorter than the drain" \
  "sed -i 's|terminationGracePeriodSeconds: 1890|terminationGracePeriodSeconds: 600|' deploy/k8s/base/statefulset.yaml" \
  "terminationGracePeriodSeconds"
run_case "TOML listen port moved without moving the container port" \
  "sed -i 's|listen = \"0.0.0.0:8443\"|listen = \"0.0.0.0:9443\"|' deploy/k8s/overlays/example/mediabot.toml" \
  "container port http = 9443"
run_case "per-pod ingress host missing for the last ordinal" \
  "sed -i 's|mediabot-2.media.example.org|mediabot-9.media.example.org|' deploy/k8s/overlays/example/ingress.yaml" \
  "ingress host mediabot-2"
run_case "per-pod Service drops publishNotReadyAddresses" \
  "sed -i '0,/publishNotReadyAddresses: true/s//publishNotReadyAddresses: false/' deploy/k8s/overlays/example/per-pod-services.yaml" \
  "publishes not-ready addresses"
run_case "operator API exposed by the ingress" \
  "sed -i '0,/path: \\/whip/s//path: \\/api\\/v1/' deploy/k8s/overlays/example/ingress.yaml" \
  "is the webhook or WHIP"
run_case "public IP of a pod differs from its LoadBalancer IP" \
  "sed -i 's|mediabot-1=203.0.113.11|mediabot-1=203.0.113.99|' deploy/k8s/overlays/example/kustomization.yaml" \
  "advertises its Service's reserved IP"
run_case "media.max_calls lowered below the HPA target" \
  "sed -i 's|^max_calls = 63|max_calls = 10|' deploy/k8s/overlays/example/mediabot.toml" \
  "HPA target 38 calls/pod < media.max_calls 10"
# The hostport overlay keeps the base config and uses the KEDA component.
run_case "media.max_calls lowered below the KEDA threshold" \
  "sed -i 's|^max_calls = 63|max_calls = 10|' deploy/k8s/base/mediabot.toml" \
  "ScaledObject threshold 38 calls/pod < media.max_calls 10"
run_case "container shell step looks up the wrong public IP key" \
  "sed -i 's|\"\$PUBLIC_IP_DIR/\$POD_NAME\"|\"\$PUBLIC_IP_DIR/\$POD_NAMESPACE\"|' deploy/k8s/base/statefulset.yaml" \
  "public IP from pod file"
run_case "systemd TimeoutStopSec shorter than the drain" \
  "sed -i 's|^TimeoutStopSec=.*|TimeoutStopSec=90|' deploy/systemd/mediabot.service" \
  "TimeoutStopSec"
# An overlay that strategic-merge-patches the URL entry itself: kustomize moves the patched
# entry to the top of env, before POD_NAME, and Kubernetes then leaves $(POD_NAME) unexpanded.
break_public_url() {
  cat >>deploy/k8s/overlays/example/statefulset-patch.yaml <<'YAML'
            - name: MEDIABOT_SERVER_PUBLIC_URL
              value: https://$(POD_NAME).media.example.org
YAML
}
run_case "overlay patches the public URL itself (the patch moves it before POD_NAME)" \
  break_public_url "it uses is defined before it"
run_case "schema: misspelt field in the StatefulSet" \
  "sed -i 's|terminationGracePeriodSeconds:|terminationGracePeriodSecond:|' deploy/k8s/base/statefulset.yaml" \
  "Kubernetes 1.31.0 schema" with-schema

if [ "$selftest_fail" != 0 ]; then
  echo "== deploy-check: SELF-TEST FAILED: the drift check let a broken copy through" >&2
  exit 1
fi
echo "== deploy-check: green ($case_no broken copies rejected)"
