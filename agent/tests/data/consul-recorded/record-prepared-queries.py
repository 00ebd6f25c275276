#!/usr/bin/env python3
"""Records what a real `consul agent -dev` answers to the prepared-query calls in
`consul-1.10.4-prepared-queries.json`.

Start a fresh agent first (the node name must be `vm`, as in the other recordings):

    consul agent -dev -node vm -bind 127.0.0.1 -client 127.0.0.1 -http-port 18600 \
        -grpc-port -1 -dns-port -1 -serf-lan-port 18601 -serf-wan-port 18602 -server-port 18603

then `record-prepared-queries.py http://127.0.0.1:18600 > consul-1.10.4-prepared-queries.json`.
Paths that name a query use the ID the agent handed out when it was created.
"""

import json
import sys
import time
import urllib.error
import urllib.request

KEPT_HEADERS = [
    "Allow",
    "Content-Type",
    "X-Cache",
    "X-Consul-Contenthash",
    "X-Consul-Default-Acl-Policy",
    "X-Consul-Effective-Consistency",
    "X-Consul-Index",
    "X-Consul-Knownleader",
    "X-Consul-Lastcontact",
]

UNKNOWN = "00000000-0000-0000-0000-000000000000"


def call(base, method, path, body):
    data = None
    if body is not None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    start = time.monotonic()
    try:
        resp = urllib.request.urlopen(req)
    except urllib.error.HTTPError as e:
        resp = e
    text = resp.read().decode()
    elapsed = int((time.monotonic() - start) * 1000)
    headers = {k: resp.headers[k] for k in KEPT_HEADERS if resp.headers.get(k) is not None}
    return {"status": resp.status, "headers": headers, "body": text, "elapsed_ms": elapsed}


def main():
    base = sys.argv[1].rstrip("/")
    entries = []
    ids = {}

    def rec(name, method, path, body=None):
        path = path.format(**ids)
        response = call(base, method, path, body)
        entries.append(
            {"name": name, "request": {"method": method, "path": path, "body": body},
             "response": response}
        )
        return response

    def create(name, query):
        response = rec(name, "POST", "/v1/query", query)
        ids[query["Name"].replace("-", "_")] = json.loads(response["body"])["ID"]

    reg = "/v1/agent/service/register"
    rec("query-list-empty", "GET", "/v1/query")
    rec("query-execute-unknown-name", "GET", "/v1/query/web/execute")
    rec("register-web", "PUT", reg, {
        "ID": "web-1", "Name": "web", "Port": 8080, "Tags": ["v1"],
        "Check": {"CheckID": "web-1-ttl", "Name": "web ttl", "TTL": "10m", "Status": "passing"}})
    rec("register-web-sidecar", "PUT", reg, {
        "Kind": "connect-proxy", "ID": "web-1-sidecar-proxy", "Name": "web-sidecar-proxy",
        "Port": 21000, "Proxy": {"DestinationServiceName": "web", "DestinationServiceID": "web-1",
                                 "LocalServicePort": 8080}})
    rec("register-db-critical", "PUT", reg, {
        "ID": "db-1", "Name": "db", "Port": 5432, "Check": {"CheckID": "db-1-ttl", "TTL": "10m"}})
    rec("register-db-warning", "PUT", reg, {
        "ID": "db-2", "Name": "db", "Port": 5433, "Tags": [],
        "Check": {"CheckID": "db-2-ttl", "TTL": "10m", "Status": "warning"}})
    rec("register-native", "PUT", reg, {
        "ID": "pay-1", "Name": "pay", "Port": 7000, "Meta": {"version": "2"},
        "Connect": {"Native": True}})

    create("query-create-web", {"Name": "web", "Service": {"Service": "web"}})
    create("query-create-web-connect", {
        "Name": "web-connect", "Service": {"Service": "web", "Connect": True, "OnlyPassing": True},
        "DNS": {"TTL": "10s"}})
    create("query-create-db", {
        "Name": "db", "Service": {"Service": "db", "Failover": {"NearestN": 3}}})
    create("query-create-db-passing", {
        "Name": "db-passing",
        "Service": {"Service": "db", "OnlyPassing": True, "Failover": {"Datacenters": ["dc2"]}}})
    create("query-create-pay-connect", {
        "Name": "pay-connect",
        "Service": {"Service": "pay", "Connect": True, "Tags": ["!canary"],
                    "ServiceMeta": {"version": "2"}}})
    response = rec("query-create-any-case", "POST", "/v1/query", {
        "name": "db-ignore",
        "service": {"service": "db", "onlypassing": True, "ignorecheckids": ["db-2-ttl"]}})
    ids["db_ignore"] = json.loads(response["body"])["ID"]

    bad = [
        ("query-create-duplicate-name", {"Name": "WEB", "Service": {"Service": "web"}}),
        ("query-create-no-service", {"Name": "x"}),
        ("query-create-anonymous", {"Service": {"Service": "web"}}),
        ("query-create-unknown-field", {"Name": "x", "Service": {"Service": "web", "Bogus": 1}}),
        ("query-create-wrong-type", {"Name": "x", "Service": {"Service": "web", "OnlyPassing": "yes"}}),
        ("query-create-bad-ttl", {"Name": "x", "Service": {"Service": "web"}, "DNS": {"TTL": "abc"}}),
        ("query-create-bad-nearest", {"Name": "x", "Service": {"Service": "web", "Failover": {"NearestN": -1}}}),
        ("query-create-redacted-token", {"Name": "x", "Token": "<hidden>", "Service": {"Service": "web"}}),
        ("query-create-unknown-session", {"Name": "x", "Session": UNKNOWN, "Service": {"Service": "web"}}),
        ("query-create-bad-json", "{"),
    ]
    for name, body in bad:
        rec(name, "POST", "/v1/query", body)
    rec("query-create-empty-body", "POST", "/v1/query")

    rec("query-list", "GET", "/v1/query")
    rec("query-get", "GET", "/v1/query/{web}")
    rec("query-get-unknown", "GET", f"/v1/query/{UNKNOWN}")
    rec("query-get-not-uuid", "GET", "/v1/query/web")
    rec("query-execute-web", "GET", "/v1/query/web/execute")
    rec("query-execute-by-id", "GET", "/v1/query/{web}/execute")
    rec("query-execute-any-case", "GET", "/v1/query/WEB/execute")
    rec("query-execute-connect", "GET", "/v1/query/web-connect/execute")
    rec("query-execute-connect-param", "GET", "/v1/query/web/execute?connect=true")
    rec("query-execute-warning-kept", "GET", "/v1/query/db/execute")
    rec("query-execute-only-passing", "GET", "/v1/query/db-passing/execute")
    rec("query-execute-ignore-check", "GET", "/v1/query/db-ignore/execute")
    rec("query-execute-native", "GET", "/v1/query/pay-connect/execute")
    rec("query-execute-limit", "GET", "/v1/query/db/execute?limit=1")
    rec("query-execute-bad-limit", "GET", "/v1/query/db/execute?limit=abc")
    rec("query-execute-bad-connect", "GET", "/v1/query/db/execute?connect=abc")
    rec("query-execute-unknown-id", "GET", f"/v1/query/{UNKNOWN}/execute")
    rec("query-explain", "GET", "/v1/query/web-connect/explain")
    rec("query-execute-wrong-method", "POST", "/v1/query/web/execute", {})
    rec("query-by-id-wrong-method", "POST", "/v1/query/{web}", {})
    rec("query-collection-wrong-method", "PUT", "/v1/query", {})
    rec("query-by-id-options", "OPTIONS", "/v1/query/{web}")
    rec("query-execute-options", "OPTIONS", "/v1/query/web/execute")

    rec("register-sidecar-check-critical", "PUT", "/v1/agent/check/register", {
        "ID": "sidecar-ttl", "Name": "sidecar ttl", "ServiceID": "web-1-sidecar-proxy",
        "TTL": "10m"})
    rec("query-execute-connect-critical", "GET", "/v1/query/web-connect/execute")

    rec("query-update", "PUT", "/v1/query/{web}",
        {"Name": "web", "Service": {"Service": "web", "Tags": ["v2"]}})
    rec("query-get-after-update", "GET", "/v1/query/{web}")
    rec("query-execute-after-update", "GET", "/v1/query/web/execute")
    rec("query-update-unknown", "PUT", f"/v1/query/{UNKNOWN}",
        {"Name": "web", "Service": {"Service": "web"}})
    rec("query-update-not-uuid", "PUT", "/v1/query/web",
        {"Name": "web", "Service": {"Service": "web"}})
    rec("query-delete", "DELETE", "/v1/query/{web}")
    rec("query-delete-again", "DELETE", "/v1/query/{web}")
    rec("query-delete-not-uuid", "DELETE", "/v1/query/web")
    rec("query-execute-deleted", "GET", "/v1/query/{web}/execute")
    rec("query-list-after-delete", "GET", "/v1/query")
    rec("query-create-template", "POST", "/v1/query", {
        "Name": "geo", "Template": {"Type": "name_prefix_match"},
        "Service": {"Service": "${name.full}"}})
    rec("query-create-with-id", "POST", "/v1/query",
        {"ID": UNKNOWN, "Name": "x", "Service": {"Service": "web"}})
    rec("query-create-bad-node-meta", "POST", "/v1/query",
        {"Name": "x", "Service": {"Service": "web", "NodeMeta": {"a b": "v"}}})
    rec("query-create-service-not-object", "POST", "/v1/query", {"Name": "x", "Service": 5})
    rec("query-create-failover-wrong-type", "POST", "/v1/query",
        {"Name": "x", "Service": {"Service": "web", "Failover": {"NearestN": "a"}}})

    json.dump(entries, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
