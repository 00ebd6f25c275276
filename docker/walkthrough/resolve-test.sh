#!/usr/bin/env bash
# shellcheck disable=SC2016  # the $(VAR) in the fixtures are Kubernetes references, not shell
# Checks walkthrough/resolve.jq on small pods: what it must resolve, what it must leave alone,
# and what it must refuse. Run by `walkthrough.sh --check` before anything else; milliseconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
failed=0

resolve() { jq -c -f "$here/resolve.jq" --arg hostIP 10.89.1.1 --arg namespace default; }

# expect NAME INPUT-POD JQ-FILTER EXPECTED: the filter applied to the resolved pod gives EXPECTED.
expect() {
  local name=$1 pod=$2 filter=$3 expected=$4 got
  if ! got=$(resolve <<<"$pod" | jq -c "$filter" 2>&1); then
    printf 'resolve-test: %s: resolve failed: %s\n' "$name" "$got" >&2; failed=1; return
  fi
  if [ "$got" != "$expected" ]; then
    printf 'resolve-test: %s:\n  expected %s\n  got      %s\n' "$name" "$expected" "$got" >&2; failed=1
  fi
}
# refuse NAME INPUT-POD MESSAGE-PART
refuse() {
  local name=$1 pod=$2 part=$3 out
  if out=$(resolve <<<"$pod" 2>&1); then
    printf 'resolve-test: %s: expected an error, got %s\n' "$name" "$out" >&2; failed=1
  elif ! grep -qF -- "$part" <<<"$out"; then
    printf 'resolve-test: %s: error lacks "%s": %s\n' "$name" "$part" "$out" >&2; failed=1
  fi
}

field() { printf '{"name":"%s","valueFrom":{"fieldRef":{"fieldPath":"%s"}}}' "$1" "$2"; }
sidecar='{"kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[
  {"name":"app","image":"a","args":["-text=\"$(HOST_IP)\""]},
  {"name":"tandem-proxy","image":"p","command":["/tandem-proxy"],"args":["--service","web"],"env":[
    '"$(field POD_NAME metadata.name)"','"$(field POD_NAMESPACE metadata.namespace)"',
    '"$(field POD_IP status.podIP)"','"$(field HOST_IP status.hostIP)"',
    {"name":"CONSUL_HTTP_ADDR","value":"http://$(HOST_IP):8500"}]}]}}'

expect "env as the injector writes it" "$sidecar" '.spec.containers[1].env' \
  '[{"name":"POD_NAME","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}},{"name":"POD_NAMESPACE","value":"default"},{"name":"HOST_IP","value":"10.89.1.1"},{"name":"CONSUL_HTTP_ADDR","value":"http://10.89.1.1:8500"}]'
expect "a container without those variables is untouched" "$sidecar" '.spec.containers[0]' \
  '{"name":"app","image":"a","args":["-text=\"$(HOST_IP)\""]}'
expect "metadata and other fields are untouched" "$sidecar" '[.metadata, .spec.containers[1].command, .spec.containers[1].args]' \
  '[{"name":"web"},["/tandem-proxy"],["--service","web"]]'

order='{"kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","env":[
  {"name":"EARLY","value":"$(LATE)"},{"name":"LATE","value":"x"},{"name":"ESC","value":"$$(LATE) $$"},
  '"$(field ME metadata.name)"',{"name":"NAMED","value":"$(ME)"}],
  "command":["$(EARLY)","$(LATE)","$(UNDEFINED)","$$(LATE)"]}]}}'
expect "env sees earlier entries only; \$\$ escapes" "$order" '[.spec.containers[0].env[] | .value // "ref"]' \
  '["$(LATE)","x","$(LATE) $","ref","p"]'
expect "command sees every entry; undefined stays" "$order" '.spec.containers[0].command' \
  '["$(LATE)","x","$(UNDEFINED)","$(LATE)"]'

init='{"kind":"Pod","metadata":{"name":"p"},"spec":{"initContainers":[{"name":"i","env":['"$(field H status.hostIP)"'],"args":["$(H)"]}],"containers":[{"name":"c"}]}}'
expect "init containers are resolved too" "$init" '.spec.initContainers[0].args' '["10.89.1.1"]'

refuse "a reference to the dropped POD_IP" \
  '{"kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","env":['"$(field POD_IP status.podIP)"'],"args":["--advertise-address=$(POD_IP)"]}]}}' \
  'container "c" refers to $(POD_IP)'
refuse "not a Pod" '{"kind":"Deployment","spec":{}}' 'expected a Pod, got kind "Deployment"'

if [ "$failed" != 0 ]; then
  echo "resolve-test: FAILED" >&2
  exit 1
fi
echo "resolve-test: resolve.jq ok (8 cases)"
