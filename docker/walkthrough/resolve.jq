# Resolves, in a Pod the webhook has injected, what Kubernetes would fill in and what
# `podman kube play` (4.3) cannot: nothing else in the Pod is touched.
#
#  - Downward-API env (podman supports only `fieldRef: metadata.name`):
#      status.podIP        dropped: the proxy finds its own first non-loopback IPv4
#      status.hostIP       the podman network's gateway, i.e. this host, where the agent listens
#      metadata.namespace  "default", the namespace the AdmissionReview named
#      metadata.name       kept: podman supplies it itself
#  - `$(VAR)` references in env values, command and args, which the kubelet expands and podman
#    passes through literally (`CONSUL_HTTP_ADDR=http://$(HOST_IP):8500`). Kubernetes' rules:
#    env values see the variables defined before them in the list, command and args see all of
#    them, an undefined reference is left as it is, `$$` is a literal `$`.
#
# A reference to a dropped variable (`$(POD_IP)`) cannot be honoured here: that is an error
# naming the container, not a silently broken pod.
#
# Input: the patched Pod as JSON. Arguments: --arg hostIP IP --arg namespace NS.

def expand($vars):
  gsub("\\$\\$|\\$\\((?<n>[A-Za-z_][-._A-Za-z0-9]*)\\)";
       if .n == null then "$" else ($vars[.n] // "$(\(.n))") end);

def field_value($path; $pod):
  if $path == "status.hostIP" then $hostIP
  elif $path == "metadata.namespace" then $namespace
  else null end;

def resolve_container($pod):
  . as $container
  | (reduce (($container.env // [])[]) as $e ({env: [], vars: {}, dropped: []};
      ($e.valueFrom.fieldRef.fieldPath // null) as $path
      | if $path == "status.podIP" then
          .dropped += [$e.name]
        elif $path == "status.hostIP" or $path == "metadata.namespace" then
          field_value($path; $pod) as $v
          | .env += [{name: $e.name, value: $v}] | .vars[$e.name] = $v
        elif $path == "metadata.name" then
          .env += [$e] | .vars[$e.name] = $pod.metadata.name
        elif ($e | has("value")) then
          .vars as $vars | ($e.value | expand($vars)) as $v
          | .env += [$e + {value: $v}] | .vars[$e.name] = $v
        else
          .env += [$e]
        end))
    as $r
  | (if $container | has("env") then .env = $r.env else . end)
  | (if has("command") then .command |= map(expand($r.vars)) else . end)
  | (if has("args") then .args |= map(expand($r.vars)) else . end)
  | . as $resolved
  | ([$r.dropped[] as $name
      | select([$resolved | .. | strings | select(contains("$(\($name))"))] | length > 0)
      | $name]) as $unresolvable
  | if ($unresolvable | length) > 0 then
      error("container \"\($container.name)\" refers to $(\($unresolvable | join(")/$(")))"
            + " from status.podIP, which podman cannot provide; the proxy must find its own"
            + " address when POD_IP is unset")
    else . end;

. as $pod
| if ($pod.kind // "") != "Pod" then error("expected a Pod, got kind \"\($pod.kind)\"") else . end
| .spec.containers |= map(resolve_container($pod))
| if .spec.initContainers then .spec.initContainers |= map(resolve_container($pod)) else . end
