"""Drives a running `tandem-agent dev` with the real Consul client library `py-consul`.

Usage: python3 consul_client.py http://127.0.0.1:PORT

Every step uses the library's own helpers; where py-consul has no helper (or its helper does
not match Consul's API, see authorize) the library's raw HTTP client is used. Exits non-zero
with a message on the first mismatch.
"""

import json
import sys
from urllib.parse import urlparse

import consul
from consul.callback import CB


def expect(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)


def main(url):
    parsed = urlparse(url)
    c = consul.Consul(host=parsed.hostname, port=parsed.port, scheme=parsed.scheme)

    me = c.agent.self()
    expect(me["Config"]["Datacenter"] == "dc1", f"agent/self datacenter: {me['Config']}")
    expect(c.status.leader() != "", "status/leader answers")

    # Register a service with its sidecar (Connect.SidecarService) and a TTL-checked worker.
    sidecar = {"SidecarService": {"Proxy": {"Upstreams": [
        {"DestinationName": "db", "LocalBindPort": 9191}]}}}
    expect(c.agent.service.register("web", port=8080, tags=["v1"], connect=sidecar),
           "register web with a sidecar")
    expect(c.agent.service.register("worker", port=9000, check=consul.Check.ttl("30s")),
           "register worker with a TTL check")
    services = c.agent.services()
    expect(set(services) == {"web", "web-sidecar-proxy", "worker"}, f"agent/services: {list(services)}")
    proxy = services["web-sidecar-proxy"]
    expect(proxy["Kind"] == "connect-proxy", f"sidecar kind: {proxy}")
    expect(proxy["Proxy"]["DestinationServiceName"] == "web", f"sidecar proxy: {proxy['Proxy']}")
    expect(proxy["Proxy"]["Upstreams"][0]["LocalBindPort"] == 9191, "sidecar upstream")

    # Health: the sidecar is the mesh endpoint of web; it is not passing (nothing listens).
    index, nodes = c.health.connect("web")
    expect(len(nodes) == 1 and nodes[0]["Service"]["ID"] == "web-sidecar-proxy", f"health/connect: {nodes}")
    expect(nodes[0]["Service"]["Port"] == 21000, "sidecar port auto-assigned from 21000")
    _, passing = c.health.connect("web", passing=True)
    expect(passing == [], f"health/connect?passing: {passing}")
    # A blocking query that times out returns the same index.
    again, _ = c.health.connect("web", index=index, wait="50ms")
    expect(again == index, f"blocking query index {again} != {index}")
    _, web = c.health.service("web")
    expect(web[0]["Service"]["Tags"] == ["v1"], f"health/service: {web}")
    _, catalog = c.catalog.service("web")
    expect(catalog[0]["ServiceID"] == "web", f"catalog/service: {catalog}")

    # TTL checks through the library's check helpers.
    expect(c.agent.check.ttl_pass("service:worker", notes="fine"), "ttl pass")
    checks = c.agent.checks()
    expect(checks["service:worker"]["Status"] == "passing", f"worker check: {checks['service:worker']}")
    expect(checks["service:worker"]["Output"] == "fine", "ttl note becomes output")
    _, worker = c.health.service("worker", passing=True)
    expect(len(worker) == 1, "worker passes once its TTL check is passing")

    # Intentions (exact-match model).
    expect(c.connect.intentions.upsert("web", "db", action="deny", description="no"), "upsert web => db")
    expect(c.connect.intentions.upsert("*", "db", action="allow"), "upsert * => db")
    ixn = c.connect.intentions.read("web", "db")
    expect(ixn["Action"] == "deny" and ixn["Precedence"] == 9, f"exact read: {ixn}")
    listed = c.connect.intentions.list()
    expect(len(listed) == 2, f"intention list: {listed}")
    matched = c.connect.intentions.match("destination", "db")
    expect([i["SourceName"] for i in matched["db"]] == ["web", "*"], f"match order: {matched}")
    expect(c.connect.intentions.check("web", "db") is False, "check web => db")
    expect(c.connect.intentions.check("api", "db") is True, "check api => db")

    # CA: roots and a leaf for web that carries web's SPIFFE ID.
    roots = c.connect.ca.roots()
    trust_domain = roots["TrustDomain"]
    expect(trust_domain.endswith(".consul"), f"trust domain: {trust_domain}")
    agent_roots = c.agent.connect.ca.roots()
    expect(agent_roots["ActiveRootID"] == roots["ActiveRootID"], "agent roots == roots")
    leaf = c.agent.connect.ca.leaf("web")
    expect(leaf["ServiceURI"] == f"spiffe://{trust_domain}/ns/default/dc/dc1/svc/web", f"leaf URI: {leaf['ServiceURI']}")
    expect(leaf["CertPEM"].startswith("-----BEGIN CERTIFICATE-----"), "leaf PEM")
    expect(leaf["PrivateKeyPEM"].startswith("-----BEGIN EC PRIVATE KEY-----"), "leaf key")

    # Authorize. py-consul's helper sends PUT, but Consul registers this endpoint for POST only
    # (agent/http_register.go), so against Consul - and against us - the helper gets a 405.
    try:
        c.agent.connect.authorize("db", leaf["ServiceURI"], leaf["SerialNumber"])
        expect(False, "authorize via PUT should be refused with 405 as Consul does")
    except consul.ConsulException as e:
        expect("405" in str(e), f"authorize via PUT: {e}")
    body = json.dumps({"Target": "db", "ClientCertURI": leaf["ServiceURI"], "ClientCertSerial": leaf["SerialNumber"]})
    decision = c.http.post(CB.json(), "/v1/agent/connect/authorize", data=body)
    expect(decision["Authorized"] is False, f"authorize web => db: {decision}")
    expect(decision["Reason"].startswith("Matched L4 intention: default/web => default/db"), decision["Reason"])
    api_uri = f"spiffe://{trust_domain}/ns/default/dc/dc1/svc/api"
    body = json.dumps({"Target": "db", "ClientCertURI": api_uri, "ClientCertSerial": "01"})
    decision = c.http.post(CB.json(), "/v1/agent/connect/authorize", data=body)
    expect(decision["Authorized"] is True, f"authorize api => db: {decision}")

    # Root rotation through the CA configuration.
    config = c.connect.ca.configuration()
    expect(config["Provider"] == "consul", f"CA config: {config}")
    expect(c.connect.ca.update_configuration("consul", {"LeafCertTTL": "24h"}), "CA rotation")
    rotated = c.connect.ca.roots()
    expect(len(rotated["Roots"]) == 2 and rotated["ActiveRootID"] != roots["ActiveRootID"], "new active root")
    new_leaf = c.agent.connect.ca.leaf("web")
    expect(new_leaf["SerialNumber"] != leaf["SerialNumber"], "leaf re-issued after rotation")

    # Bad input surfaces as the library's exceptions.
    try:
        c.agent.service.register("", port=1)
        expect(False, "registering without a name must fail")
    except consul.ConsulException as e:
        expect("Missing service name" in str(e), f"missing name: {e}")

    # Clean up.
    expect(c.connect.intentions.delete("web", "db"), "delete web => db")
    expect(c.agent.service.deregister("web"), "deregister web")
    expect(set(c.agent.services()) == {"worker"}, "sidecar left with its parent")
    print("py-consul: all checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
