#!/usr/bin/env bash
# The seed walkthrough ("Connect Sidecar on Kubernetes") end to end, in real containers.
#
#   docker/walkthrough.sh           set up, build, run the walkthrough, leave the pods running
#   docker/walkthrough.sh --check   the same, asserting every step (CI); exits non-zero at the
#                                   first failure and prints the logs of what was involved
#   docker/walkthrough.sh --down    remove the pods, the injector, the agent and temp files
#
# Kubernetes is not available here; podman plays Pod YAML with containers sharing one network
# namespace, as in a Kubernetes pod. What the API server and kubelet would do is done for real:
# each seed manifest, unchanged, is wrapped in an AdmissionReview and POSTed over HTTPS to
# `tandem-injector serve` (running from its FROM scratch image), the returned JSON patch is
# applied with `kubectl patch --local --type=json`, and only what podman cannot do itself is
# resolved (downward-API fields other than metadata.name, `$(VAR)` references; see
# walkthrough/resolve.jq). The node's Consul agent is `tandem-agent dev` on this host, listening
# on the podman network's gateway: the address pods know as their status.hostIP.
#
# Environment: TANDEM_WALKTHROUGH_DIR (temp files, default /tmp/tandem-walkthrough),
# TANDEM_AGENT_PORT (default 8500, where the injected proxies look for the agent),
# TANDEM_WAIT_SECONDS (deadline for each wait, default 60). Needs root (podman, apt-get).
set -Eeuo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=images.env
. "$here/images.env"

state=${TANDEM_WALKTHROUGH_DIR:-/tmp/tandem-walkthrough}
agent_port=${TANDEM_AGENT_PORT:-8500}
wait_seconds=${TANDEM_WAIT_SECONDS:-60}
network=tandem-walkthrough
injector_name=tandem-walkthrough-injector
injector_host=tandem-injector.tandem-system.svc   # the name `tandem-injector install` serves
namespace=default
pods=(static-server static-client)
upstream_url=http://127.0.0.1:1234/             # the seed's upstream annotation: static-server:1234

mode=run
case ${1:-} in
  "") ;;
  --check) mode=check ;;
  --down) mode=down ;;
  -h | --help)
    sed -n '2,/^set -/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0 ;;
  *) echo "walkthrough: unknown argument \"$1\": expected --check, --down or --help" >&2; exit 64 ;;
esac
[ $# -le 1 ] || { echo "walkthrough: one argument at most (got $*)" >&2; exit 64; }

# ---------------------------------------------------------------------------------------------
# Narration, checks and diagnostics

started_at=$(date +%s)
failures=0

say() { printf '\n» %s\n\n' "$*"; }
note() { printf '  %s\n' "$*"; }
cmd() { printf '$ %s\n' "$*"; }
ok() { printf '  ✓ %s\n' "$*"; }

# Our binaries colour their logs even into files; diagnostics are read as plain text.
plain() { sed 's/\x1b\[[0-9;]*m//g'; }

# Prints the logs of the pods named (all their containers), of the agent and of the injector.
diagnose() {
  local pod name
  for pod in "$@"; do
    for name in $(podman ps -a --filter "pod=$pod" --format '{{.Names}}' 2>/dev/null | grep -v -- '-infra$' || true); do
      printf '\n----- podman logs %s (%s) -----\n' "$name" \
        "$(podman inspect --format 'state {{.State.Status}}, exit {{.State.ExitCode}}, restarts {{.RestartCount}}' "$name" 2>/dev/null || echo gone)"
      podman logs --tail 60 "$name" 2>&1 | plain || true
    done
  done
  if [ -f "$state/agent.log" ]; then
    printf '\n----- tandem-agent (%s, last 40 lines) -----\n' "$state/agent.log"
    tail -n 40 "$state/agent.log" | plain || true
    if [ -n "${agent_url:-}" ]; then
      printf '\n----- agent services (GET %s/v1/agent/services) -----\n' "$agent_url"
      curl -s --max-time 5 "$agent_url/v1/agent/services" || true
      echo
    fi
  fi
  if podman container exists "$injector_name" 2>/dev/null; then
    printf '\n----- podman logs %s (last 40 lines) -----\n' "$injector_name"
    podman logs --tail 40 "$injector_name" 2>&1 | plain || true
  fi
}

# A step that the rest depends on failed: stop here, whatever the mode.
reported=''
die() {
  local message=$1; shift
  reported=yes
  printf '\n  ✗ %s\n' "$message" >&2
  diagnose "$@" >&2
  printf '\nwalkthrough: FAILED after %ss: %s\n' "$(($(date +%s) - started_at))" "$message" >&2
  exit 1
}

# An outcome the seed promises did not happen: with --check stop, otherwise say so and go on.
expectation_failed() {
  local message=$1; shift
  if [ "$mode" = check ]; then
    die "$message" "$@"
  fi
  printf '  ✗ %s\n' "$message"
  failures=$((failures + 1))
}

# wait_until DESCRIPTION COMMAND...: runs COMMAND until it succeeds, for at most $wait_seconds.
wait_until() {
  local description=$1; shift
  local deadline=$(($(date +%s) + wait_seconds))
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      printf '  timed out after %ss waiting for %s\n' "$wait_seconds" "$description" >&2
      return 1
    fi
    sleep 0.5   # the poll interval; the deadline above is what bounds the wait
  done
}

# ---------------------------------------------------------------------------------------------
# Tear-down (also the first thing a run does, so a run can be repeated)

# The PID in a pid file, only if it is still the process we started.
our_pid() {
  local file=$1 expected=$2 pid
  [ -f "$file" ] || return 1
  pid=$(cat "$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$expected" || return 1
  printf '%s' "$pid"
}

down() {
  local pod pid
  local err
  # (podman warns when a shell that ignores SIGTERM, like static-client's, needs a SIGKILL)
  for pod in "${pods[@]}"; do
    if podman pod exists "$pod" 2>/dev/null; then
      if err=$(podman pod rm --force --time 2 "$pod" 2>&1 >/dev/null); then
        note "removed pod $pod"
      else
        note "could not remove pod $pod: $err"
      fi
    fi
  done
  if podman container exists "$injector_name" 2>/dev/null; then
    if err=$(podman rm --force --time 2 "$injector_name" 2>&1 >/dev/null); then
      note "removed container $injector_name"
    else
      note "could not remove container $injector_name: $err"
    fi
  fi
  if pid=$(our_pid "$state/agent.pid" "tandem-agent dev"); then
    kill "$pid"
    local deadline=$(($(date +%s) + 10))
    while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    note "stopped tandem-agent (pid $pid)"
  fi
  if podman network exists "$network" 2>/dev/null; then
    podman network rm "$network" >/dev/null
    note "removed podman network $network"
  fi
  rm -rf "$state"
}

if [ "$mode" = down ]; then
  command -v podman >/dev/null 2>&1 || { rm -rf "$state"; exit 0; }
  say "Removing the walkthrough's pods, processes and temp files"
  down
  note "done (images are kept: podman images | grep -E 'tandem|http-echo|curl')"
  exit 0
fi

# Anything that fails outside an explicit check still says where, and shows the logs.
trap 'failed_line=$LINENO failed_command=$BASH_COMMAND' ERR
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -z "$reported" ]; then
    printf '\nwalkthrough: stopped unexpectedly (exit %s) at line %s: %s\n' \
      "$rc" "${failed_line:-?}" "${failed_command:-?}" >&2
    diagnose "${pods[@]}" >&2
  fi
}
trap on_exit EXIT

# ---------------------------------------------------------------------------------------------
# 0. This machine: podman, the binaries, the images

say "Tandem: the seed walkthrough \"Connect Sidecar on Kubernetes\", in real pods (podman)"

[ "$(id -u)" = 0 ] || die "run as root: podman here runs rootful, and set-up installs packages"
note "setting up podman (docker/setup-podman.sh)"
"$here/setup-podman.sh"
"$here/walkthrough/resolve-test.sh" || die "walkthrough/resolve.jq does not resolve pods as it must"
command -v cargo >/dev/null 2>&1 ||
  die "cargo is missing: install Rust (https://rustup.rs) and run this again"

note "clearing any earlier run"
down

note "building static binaries and images (docker/build-images.sh)"
"$here/build-images.sh" || die "building the binaries or images failed (output above)"
target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
bin=$target_dir/x86_64-unknown-linux-gnu/release
[ -x "$bin/tandem-agent" ] || die "$bin/tandem-agent was not built"
mkdir -p "$state/review"

# The two images users deploy: nothing but the static binary, a numeric non-root user, no shell.
for image in "$PROXY_IMAGE" "$INJECTOR_IMAGE"; do
  user=$(podman image inspect --format '{{.Config.User}}' "$image")
  layers=$(podman image inspect --format '{{len .RootFS.Layers}}' "$image")
  if ! [[ $user =~ ^[1-9][0-9]*(:[0-9]+)?$ ]]; then
    expectation_failed "$image runs as \"$user\", not a numeric non-root user"
  elif [ "$layers" != 1 ]; then
    expectation_failed "$image has $layers layers; FROM scratch + one binary has 1"
  elif podman run --rm --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1; then
    expectation_failed "$image has a shell"
  else
    ok "$image: FROM scratch, one layer, user $user, no shell"
  fi
done

podman network create "$network" >/dev/null
gateway=$(podman network inspect "$network" | jq -r '.[0].subnets[0].gateway')
if [ -z "$gateway" ] || [ "$gateway" = null ]; then
  die "podman network $network has no gateway"
fi

# ---------------------------------------------------------------------------------------------
# 1. The injector (HTTPS, from its image) and the node's agent

say "The Connect injector: tandem-injector serve, over HTTPS, in its FROM scratch image"
mkdir -p "$state/injector"
chown 65532:65532 "$state/injector"   # the image's user writes the CA bundle there
injector_args=(serve --listen 0.0.0.0:8443 --proxy-image "$PROXY_IMAGE"
  --tls-auto-hosts "$injector_host,localhost" --ca-bundle-out /run/tandem-injector/ca.pem)
if [ "$agent_port" != 8500 ]; then
  injector_args+=(--consul-http-addr "http://$gateway:$agent_port")
fi
cmd "podman run -d --read-only --name $injector_name -p 127.0.0.1::8443 $INJECTOR_IMAGE ${injector_args[*]}"
# (podman's own chatter, e.g. "failed to connect to syslog" on machines without one, goes to a file)
podman run -d --read-only --name "$injector_name" --network "$network" -p 127.0.0.1::8443 \
  -v "$state/injector:/run/tandem-injector" "$INJECTOR_IMAGE" "${injector_args[@]}" \
  >/dev/null 2>"$state/injector.run.err" ||
  die "the injector container did not start: $(cat "$state/injector.run.err")"
injector_port=$(podman port "$injector_name" 8443/tcp | head -n1 | sed 's/.*://')
[ -n "$injector_port" ] || die "podman published no port for the injector"
ca_bundle=$state/injector/ca.pem
webhook=https://$injector_host:$injector_port
# The API server reaches the webhook by its Service name; here that name resolves to the port
# podman published on the loopback. The certificate is verified against the injector's own CA.
webhook_curl() {
  curl -sS --max-time 10 --cacert "$ca_bundle" --resolve "$injector_host:$injector_port:127.0.0.1" "$@"
}
injector_ready() { [ -s "$ca_bundle" ] && webhook_curl -f -o /dev/null "$webhook/health/ready" 2>/dev/null; }
wait_until "the injector to be ready (GET $webhook/health/ready)" injector_ready ||
  die "the injector never became ready" 
ok "webhook ready at $webhook (port published on 127.0.0.1), CA bundle $ca_bundle"

say "The node's Consul agent: tandem-agent dev"
# Pods reach this host at the podman network's gateway (their status.hostIP). Listening there
# rather than on 0.0.0.0 keeps the agent off every other interface and out of the way of anything
# on 127.0.0.1:8500. The gateway address exists once a container is on the network (the injector).
agent_addr=$gateway:$agent_port
agent_url=http://$agent_addr
export CONSUL_HTTP_ADDR=$agent_url   # for `tandem-agent intention`, as for the consul CLI
cmd "tandem-agent dev --http-addr $agent_addr"
setsid "$bin/tandem-agent" dev --http-addr "$agent_addr" </dev/null >>"$state/agent.log" 2>&1 &
echo $! >"$state/agent.pid"
agent_up() { curl -s --max-time 2 -o /dev/null "$agent_url/v1/status/leader"; }
wait_until "the agent to answer on $agent_url" agent_up || die "tandem-agent did not start"
ok "agent serving $agent_url (log: $state/agent.log)"

# ---------------------------------------------------------------------------------------------
# 2. Each seed manifest, unchanged, through the webhook and into podman

# admit NAME: AdmissionReview -> /mutate -> kubectl patch --local -> resolve -> podman kube play
admit_and_play() {
  local name=$1
  local manifest=$here/walkthrough/manifests/$name.yaml
  local dir=$state/review uid
  uid=$(cat /proc/sys/kernel/random/uuid)
  cmd "kubectl apply -f $name.yaml"
  note "(here: the API server's part, done by this script)"

  # YAML -> JSON without a cluster: an empty JSON patch applied locally.
  kubectl patch --local -f "$manifest" --type=json -p '[]' -o json >"$dir/$name.pod.json" ||
    die "kubectl could not read $manifest"
  jq --arg uid "$uid" --arg ns "$namespace" '{
      apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview",
      request: {
        uid: $uid,
        kind: {group: "", version: "v1", kind: "Pod"},
        resource: {group: "", version: "v1", resource: "pods"},
        requestKind: {group: "", version: "v1", kind: "Pod"},
        requestResource: {group: "", version: "v1", resource: "pods"},
        name: .metadata.name, namespace: $ns, operation: "CREATE",
        userInfo: {username: "kubernetes-admin", groups: ["system:masters", "system:authenticated"]},
        object: ., oldObject: null, dryRun: false,
        options: {apiVersion: "meta.k8s.io/v1", kind: "CreateOptions"}
      }
    }' "$dir/$name.pod.json" >"$dir/$name.review.json"

  note "POST $webhook/mutate  (AdmissionReview uid $uid, verifying the webhook against its CA)"
  webhook_curl --fail-with-body -H 'Content-Type: application/json' \
    --data-binary @"$dir/$name.review.json" "$webhook/mutate" >"$dir/$name.response.json" ||
    die "the webhook refused the AdmissionReview for $name: $(cat "$dir/$name.response.json" 2>/dev/null)"
  local answer
  answer=$(jq -r --arg uid "$uid" '.response |
      if .uid != $uid then "uid \(.uid) does not echo \($uid)"
      elif .allowed != true then "not allowed: \(.status.message // "no message")"
      elif .patchType != "JSONPatch" or (.patch | type) != "string" then "no JSONPatch in the answer"
      else "ok" end' "$dir/$name.response.json" 2>&1) ||
    answer="unreadable answer: $answer"
  [ "$answer" = ok ] || die "webhook answer for $name: $answer (see $dir/$name.response.json)"
  jq -r .response.patch "$dir/$name.response.json" | base64 -d >"$dir/$name.patch.json" ||
    die "the patch for $name is not base64"
  ok "allowed, with a JSONPatch of $(jq length "$dir/$name.patch.json") operations ($dir/$name.patch.json)"

  kubectl patch --local -f "$manifest" --type=json --patch-file "$dir/$name.patch.json" -o yaml \
    >"$dir/$name.injected.yaml" || die "kubectl could not apply the webhook's patch for $name"
  kubectl patch --local -f "$manifest" --type=json --patch-file "$dir/$name.patch.json" -o json \
    >"$dir/$name.injected.json"
  ok "patch applied as the API server would: kubectl patch --local --type=json -> $dir/$name.injected.yaml"

  jq -f "$here/walkthrough/resolve.jq" --arg hostIP "$gateway" --arg namespace "$namespace" \
    "$dir/$name.injected.json" >"$dir/$name.play.json" 2>"$dir/$name.resolve.err" ||
    die "cannot play $name in podman: $(cat "$dir/$name.resolve.err")"
  note "for podman: status.hostIP -> $gateway, metadata.namespace -> $namespace, status.podIP dropped" \
    "(the proxy finds its own address), \$(VAR) references expanded"

  cmd "podman kube play --network $network $dir/$name.play.json"
  podman kube play --network "$network" "$dir/$name.play.json" >"$dir/$name.play.out" 2>&1 ||
    die "podman kube play failed for $name: $(cat "$dir/$name.play.out")" "$name"

  # The kubelet's readiness probe, as the injector wrote it.
  local probe
  mapfile -t probe < <(jq -r '.spec.containers[] | select(.name == "tandem-proxy")
      | .readinessProbe.exec.command // [] | .[]' "$dir/$name.injected.json")
  [ ${#probe[@]} -gt 0 ] || die "the injected $name has no tandem-proxy container with an exec readiness probe"
  proxy_ready() { podman exec "$name-tandem-proxy" "${probe[@]}" >/dev/null 2>&1; }
  wait_until "$name's proxy to pass its readiness probe (${probe[*]})" proxy_ready ||
    die "$name's tandem-proxy never became ready" "$name"
  ok "pod $name running; tandem-proxy ready (${probe[*]} exits 0)"
}

say "Accepting Inbound Connections: static-server"
admit_and_play static-server
say "Connecting to Connect-Enabled Services: static-client"
admit_and_play static-client

# ---------------------------------------------------------------------------------------------
# 3. The seed's verification: the injected container and the annotation

say "Verifying the Installation"
cmd "kubectl get pod static-server -o yaml"
note "(here: the pod podman runs, and the injected YAML in $state/review/static-server.injected.yaml)"
podman ps -a --filter pod=static-server --format '  {{.Names}}\t{{.Image}}\t{{.Status}}' | grep -v -- '-infra' || true
containers=$(podman pod inspect static-server | jq -r '[.Containers[].Name] | join(" ")' || true)
status=$(podman inspect --format '{{index .Config.Annotations "consul.hashicorp.com/connect-inject-status"}}' \
  static-server-static-server 2>/dev/null || true)
note "annotation consul.hashicorp.com/connect-inject-status: ${status:-<none>}"
grep -qw static-server-tandem-proxy <<<"$containers" ||
  expectation_failed "static-server has no injected tandem-proxy container (containers: $containers)" static-server
[ "$status" = injected ] ||
  expectation_failed "static-server lacks consul.hashicorp.com/connect-inject-status: injected" static-server
if [ "$status" = injected ] && grep -qw static-server-tandem-proxy <<<"$containers"; then
  ok "injected tandem-proxy container and connect-inject-status: injected"
fi

# ---------------------------------------------------------------------------------------------
# 4-6. curl through the mesh, deny, allow again

client_curl_cmd=(podman exec static-client-static-client curl -s "$upstream_url")
curl_out='' curl_rc=0
client_curl() {
  curl_rc=0
  curl_out=$(timeout 20 "${client_curl_cmd[@]}" 2>&1) || curl_rc=$?
}
curl_says_hello() { client_curl; [ "$curl_rc" = 0 ] && [ "$curl_out" = '"hello world"' ]; }
curl_gets_52() { client_curl; [ "$curl_rc" = 52 ]; }
show_curl() {
  cmd "kubectl exec static-client -- curl -s $upstream_url"
  note "(here: ${client_curl_cmd[*]})"
  client_curl
  [ -z "$curl_out" ] || printf '%s\n' "$curl_out"
  [ "$curl_rc" = 0 ] || printf 'command terminated with exit code %s\n' "$curl_rc"
}

# The containers of both pods with their IDs, restart counts and start times.
pod_snapshot() {
  local pod name
  for pod in "${pods[@]}"; do
    for name in $(podman ps -a --filter "pod=$pod" --format '{{.Names}}' | sort); do
      podman inspect --format '{{.Name}} {{.Id}} restarts={{.RestartCount}} started={{.State.StartedAt}}' \
        "$name" 2>/dev/null || echo "$name gone"
    done
  done
}

say "Connecting through the mesh"
wait_until "curl in static-client to get \"hello world\" through the proxies" curl_says_hello || true
show_curl
if [ "$curl_rc" = 0 ] && [ "$curl_out" = '"hello world"' ]; then
  ok "\"hello world\" from static-server, over mutual TLS between the two tandem-proxy sidecars"
else
  expectation_failed "expected \"hello world\", got exit $curl_rc: $curl_out" static-client static-server
fi
before=$(pod_snapshot)

say "Intentions: deny static-client -> static-server"
cmd "tandem-agent intention create -deny static-client static-server"
"$bin/tandem-agent" intention create -deny static-client static-server ||
  die "tandem-agent intention create failed" static-client static-server
wait_until "curl to exit with code 52 under the deny intention" curl_gets_52 || true
show_curl
if [ "$curl_rc" = 52 ]; then
  ok "rejected: curl exit code 52 (empty reply), as the seed shows"
else
  expectation_failed "expected curl exit code 52 under the deny intention, got $curl_rc: $curl_out" \
    static-client static-server
fi
after_deny=$(pod_snapshot)
if [ "$before" = "$after_deny" ]; then
  ok "no pod restarted: same containers, restart counts and start times"
else
  expectation_failed "containers changed under the deny intention:
--- before
$before
--- after
$after_deny" static-client static-server
fi

say "Intentions: remove the deny"
cmd "tandem-agent intention delete static-client static-server"
"$bin/tandem-agent" intention delete static-client static-server ||
  die "tandem-agent intention delete failed" static-client static-server
wait_until "curl to get \"hello world\" again" curl_says_hello || true
show_curl
if [ "$curl_rc" = 0 ] && [ "$curl_out" = '"hello world"' ]; then
  ok "allowed again, still without restarting anything"
else
  expectation_failed "expected \"hello world\" after deleting the intention, got exit $curl_rc: $curl_out" \
    static-client static-server
fi
after_allow=$(pod_snapshot)
[ "$before" = "$after_allow" ] ||
  expectation_failed "containers changed after deleting the intention:
--- before
$before
--- after
$after_allow" static-client static-server

# ---------------------------------------------------------------------------------------------
# HTTP: static-server marked http, an L7 intention decides each request

say "HTTP: static-server speaks http; deny GET /admin from static-client"
defaults=$state/static-server-defaults.hcl
printf 'Kind     = "service-defaults"\nName     = "static-server"\nProtocol = "http"\n' >"$defaults"
cmd "tandem-agent config write static-server-defaults.hcl"
sed 's/^/  /' "$defaults"
"$bin/tandem-agent" config write "$defaults" ||
  die "tandem-agent config write failed" static-client static-server
l7_intention='{"Permissions": [{"Action": "deny", "HTTP": {"PathPrefix": "/admin", "Methods": ["GET"]}}]}'
cmd "curl -X PUT '$agent_url/v1/connect/intentions/exact?source=static-client&destination=static-server' -d '$l7_intention'"
curl -sf -X PUT "$agent_url/v1/connect/intentions/exact?source=static-client&destination=static-server" \
  -d "$l7_intention" >/dev/null ||
  die "the L7 intention was refused: $(curl -s -X PUT "$agent_url/v1/connect/intentions/exact?source=static-client&destination=static-server" -d "$l7_intention")" \
    static-client static-server
# Both URLs in one curl: it sends them on one kept-alive connection, and says so.
two_urls_cmd=(podman exec static-client-static-client curl -s -w '\n%{http_code} connects=%{num_connects}\n'
  "${upstream_url}admin" "$upstream_url")
two_urls() {
  curl_rc=0
  curl_out=$(timeout 20 "${two_urls_cmd[@]}" 2>&1) || curl_rc=$?
  curl_out=$(printf '%s\n' "$curl_out" | sed '/^$/d')   # a body may or may not end in a newline
}
expected_two='RBAC: access denied
403 connects=1
"hello world"
200 connects=0'
admin_denied_on_one_connection() { two_urls; [ "$curl_rc" = 0 ] && [ "$curl_out" = "$expected_two" ]; }
wait_until "GET /admin to be denied and GET / answered on one connection" admin_denied_on_one_connection || true
cmd "kubectl exec static-client -- curl -s ${upstream_url}admin $upstream_url"
note "(here: ${two_urls_cmd[*]})"
printf '%s\n' "$curl_out"
if [ "$curl_rc" = 0 ] && [ "$curl_out" = "$expected_two" ]; then
  ok "/admin: 403 RBAC: access denied; /: \"hello world\"; both on one kept-alive connection"
else
  expectation_failed "expected a 403 for /admin and \"hello world\" for / on one connection, got exit $curl_rc:
$curl_out" static-client static-server
fi
after_http=$(pod_snapshot)
[ "$before" = "$after_http" ] ||
  expectation_failed "containers changed when static-server became http:
--- before
$before
--- after
$after_http" static-client static-server

# ---------------------------------------------------------------------------------------------
# The seed's Deployment: the pod template is what gets injected (offline, with `inject`)

say "Deployments, StatefulSets, etc."
cmd "tandem-injector inject -f example-deployment.yaml"
note "(here: podman run -i --rm $INJECTOR_IMAGE inject -f - --proxy-image $PROXY_IMAGE)"
podman run -i --rm "$INJECTOR_IMAGE" inject -f - --proxy-image "$PROXY_IMAGE" \
  <"$here/walkthrough/manifests/example-deployment.yaml" >"$state/review/example-deployment.injected.yaml" ||
  die "tandem-injector inject failed on example-deployment.yaml"
template=$(kubectl patch --local -f "$state/review/example-deployment.injected.yaml" --type=json -p '[]' -o json |
  jq -c '{containers: [.spec.template.spec.containers[].name],
          status: .spec.template.metadata.annotations["consul.hashicorp.com/connect-inject-status"]}') ||
  die "the injected Deployment is not a readable Deployment ($state/review/example-deployment.injected.yaml)"
note "pod template: $template"
if [ "$(jq -r '(.containers | index("tandem-proxy") != null) and .status == "injected"' <<<"$template")" = true ]; then
  ok "the template now carries tandem-proxy and connect-inject-status: injected"
else
  expectation_failed "the Deployment's pod template was not injected: $template"
fi

# ---------------------------------------------------------------------------------------------

elapsed=$(($(date +%s) - started_at))
say "Left running for you to explore"
note "podman pod ps"
note "${client_curl_cmd[*]}"
note "podman logs static-server-tandem-proxy"
note "CONSUL_HTTP_ADDR=$agent_url $bin/tandem-agent intention list"
note "the AdmissionReviews, answers, patches and played pods: $state/review/"
note "docker/walkthrough.sh --down    removes it all"
echo
if [ "$failures" -gt 0 ]; then
  reported=yes
  printf 'walkthrough: %s expectation(s) not met (%ss)\n' "$failures" "$elapsed" >&2
  exit 1
fi
printf 'walkthrough: all steps passed in %ss\n' "$elapsed"
