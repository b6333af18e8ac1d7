"""Validates rendered Kubernetes manifests without a cluster (run by `cargo xtask manifests`).

- Built-in kinds: against the Kubernetes OpenAPI schemas bundled in `kubernetes-validate`,
  strictly (an unknown field is an error, as the API server's strict field validation makes it).
- Custom resources (Istio, Envoy Gateway, Gateway API): against the schemas vendored in
  schemas/ (see vendor.py), made strict the same way: every object that lists its properties
  and neither allows others nor preserves unknown fields refuses any other. The CEL rules
  (`x-kubernetes-validations`) are not evaluated: only an API server can.
- A kind with no schema is an error, never skipped.
- Argo CD's order: a hook Job runs in the Sync phase, after the resources it needs (earlier
  sync waves) and before the Deployments.
- Network access: auth-api's public and internal ports are open to named namespaces only (the
  gateway's pods, Prometheus's namespace `monitoring` on the public port), and
  AUTH_TRUSTED_PROXIES is no wider than /20 (IPv6 /56): whoever reaches auth-api from inside it
  chooses its own rate-limit bucket.
- Images: a container running the example upstream (an echo of each request, Authorization
  included) uses its own image `echo-upstream`, never auth-api's; the Dockerfile's `runtime`
  stage (--dockerfile) does not copy it in.
- Monitoring (--alerts): the ServiceMonitors scrape exactly one Service's /metrics, named as the
  job the alert rules select, and each PrometheusRule carries exactly the rule file's groups.
- docker-compose.yml, against the Compose Specification's schema (deploy/compose-spec.json),
  as written (the `${VAR}` references are not interpolated: no value is needed to check it).
- The wasm filter's configuration in a WasmPlugin or EnvoyExtensionPolicy is written out as
  JSON (--plugin-configs), for xtask to parse with the filter's own parser, and compared with
  envoy/docker.yaml's (--filter-config-like): equal but for the names of the deployment.
- The CORS policies (HTTPRoute `CORS` filters, SecurityPolicy `cors`) of each rendered file: the
  same in every route rule with a backend, with envoy/docker.yaml's methods, headers and max
  age, and the origins of auth-api's AUTH_CORS_ALLOWED_ORIGINS (ConfigMap `auth-api`).

usage: validate.py --schemas DIR --kubernetes-version 1.37.0 [--plugin-configs DIR] FILE...
       [--yaml-only FILE...] [--compose docker-compose.yml compose-spec.json]
       [--alerts deploy/observability/alerts.yaml] [--dockerfile Dockerfile]
"""

import argparse
import copy
import ipaddress
import json
import pathlib
import re
import sys

import jsonschema
import kubernetes_validate
import yaml


def strict(schema):
    """The schema with additionalProperties false wherever the API server would prune."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for key, value in node.items():
                # Objects under these keys are schemas; `properties` maps names to schemas.
                if key == "properties":
                    for sub in value.values():
                        walk(sub)
                elif key in ("items", "additionalProperties", "not"):
                    walk(value)
                elif key in ("allOf", "anyOf", "oneOf"):
                    for sub in value:
                        walk(sub)

    walk(schema)
    # apiVersion, kind and metadata are the API server's, present in every resource.
    top = schema.setdefault("properties", {})
    top.setdefault("apiVersion", {"type": "string"})
    top.setdefault("kind", {"type": "string"})
    top.setdefault("metadata", {"type": "object"})
    return schema


def load_schemas(directory):
    schemas = {}
    for path in sorted(pathlib.Path(directory).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        key = (f"{doc['group']}/{doc['version']}", doc["kind"])
        schemas[key] = (path.name, strict(doc["schema"]))
    return schemas


def where(error):
    return ".".join(str(p) for p in error.absolute_path) or "(top)"


def report(label, problems, ok):
    """Prints one check's verdict, its problems or `ok` after `label`; 1 when it failed."""
    for problem in problems:
        print(f"ERROR {label}: {problem}")
    if not problems:
        print(f"ok    {label}{ok}")
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--schemas", required=True)
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("--plugin-configs")
    parser.add_argument("files", nargs="+")
    parser.add_argument(
        "--yaml-only", nargs="*", default=[], help="files that are not Kubernetes resources"
    )
    parser.add_argument(
        "--filter-config-like",
        metavar="ENVOY_YAML",
        help="an Envoy config whose wasm filter configuration the plugin configurations must equal,"
        " but for the names of this deployment (see SITE_SPECIFIC)",
    )
    parser.add_argument(
        "--compose",
        nargs=2,
        metavar=("FILE", "SCHEMA"),
        help="a docker-compose file and the Compose Specification's JSON schema",
    )
    parser.add_argument(
        "--dockerfile", help="a Dockerfile whose `runtime` stage must not ship echo-upstream"
    )
    parser.add_argument(
        "--alerts",
        metavar="ALERTS_YAML",
        help="the Prometheus rule file whose groups the PrometheusRules must carry, and whose"
        " job the ServiceMonitors must give",
    )
    args = parser.parse_args()
    schemas = load_schemas(args.schemas)
    failures = 0
    checked = 0
    every_doc = []
    for file in args.files:
        docs = [d for d in yaml.safe_load_all(pathlib.Path(file).read_text()) if d]
        every_doc += docs
        for what, problems in (
            ("Argo CD sync order", argo_order_problems(docs)),
            ("network access and trusted proxies", network_problems(docs)),
            ("images", image_problems(docs)),
        ):
            checked += 1
            if problems:
                failures += 1
                for line in problems:
                    print(f"ERROR {file}: {what}: {line}")
            else:
                print(f"ok    {file}: {what}")
        if args.filter_config_like:
            checked += 1
            drift = cors_differences(
                cors_reference(args.filter_config_like),
                [d for d in yaml.safe_load_all(pathlib.Path(file).read_text()) if d],
            )
            if drift:
                failures += 1
                for line in drift:
                    print(f"ERROR {file}: CORS: {line}")
            else:
                print(f"ok    {file}: CORS policies alike, as {args.filter_config_like}'s")
        for doc in yaml.safe_load_all(pathlib.Path(file).read_text()):
            if doc is None:
                continue
            api_version, kind = doc.get("apiVersion"), doc.get("kind")
            name = (doc.get("metadata") or {}).get("name")
            label = f"{file}: {kind} {name}"
            errors = []
            if not name:
                errors.append("metadata.name is missing")
            if (api_version, kind) in schemas:
                source, schema = schemas[(api_version, kind)]
                validator = jsonschema.Draft7Validator(schema)
                errors += [f"{where(e)}: {e.message}" for e in validator.iter_errors(doc)]
                how = f"schema {source}"
            else:
                how = f"Kubernetes {args.kubernetes_version}"
                try:
                    kubernetes_validate.validate(doc, args.kubernetes_version, strict=True)
                except kubernetes_validate.SchemaNotFoundError:
                    errors.append(
                        f"no schema for {api_version} {kind}: vendor one (schemas/vendor.py)"
                    )
                except kubernetes_validate.ValidationError as e:
                    errors.append(f"{where(e)}: {e.message}")
            checked += 1
            failures += report(label, errors, f" ({how})")
            for config in plugin_configs(doc):
                if args.plugin_configs:
                    write_plugin_config(config, doc, file, args.plugin_configs)
                if args.filter_config_like:
                    checked += 1
                    like = args.filter_config_like
                    drift = differences(reference(like), config)
                    failures += report(
                        label,
                        [f"unlike {like}: {line}" for line in drift],
                        f": the filter configuration of {like}",
                    )
    for file in args.yaml_only:
        checked += 1
        try:
            docs = [d for d in yaml.safe_load_all(pathlib.Path(file).read_text()) if d]
            if not docs or not all(isinstance(d, dict) for d in docs):
                raise ValueError("expected one or more mappings")
            print(f"ok    {file} (YAML only)")
        except (yaml.YAMLError, ValueError) as e:
            failures += 1
            print(f"ERROR {file}: {e}")
    if args.compose:
        compose, schema_file = args.compose
        checked += 1
        schema = json.loads(pathlib.Path(schema_file).read_text())
        doc = yaml.safe_load(pathlib.Path(compose).read_text())
        errors = jsonschema.Draft7Validator(schema).iter_errors(doc)
        failures += report(
            compose,
            [f"{where(e)}: {e.message}" for e in errors],
            " (Compose Specification, before interpolation)",
        )
    if args.dockerfile:
        checked += 1
        failures += report(
            args.dockerfile,
            dockerfile_problems(args.dockerfile),
            ": the runtime image holds auth-api only",
        )
    if args.alerts:
        checked += 1
        failures += report(
            "monitoring",
            monitoring_problems(every_doc, args.alerts),
            f": the ServiceMonitor and PrometheusRule agree with {args.alerts}",
        )
    print(f"{checked - failures} passed, {failures} failed")
    sys.exit(1 if failures or not checked else 0)


def plugin_configs(doc):
    """The filter configurations of a WasmPlugin or an EnvoyExtensionPolicy."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "WasmPlugin" and "pluginConfig" in spec:
        return [spec["pluginConfig"]]
    if doc.get("kind") == "EnvoyExtensionPolicy":
        return [w["config"] for w in spec.get("wasm", []) if "config" in w]
    return []


def write_plugin_config(config, doc, file, out_dir):
    """A filter configuration as a JSON file, for the filter's own parser."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = pathlib.Path(file).stem
    n = len(list(out.glob(f"{stem}.{doc['kind']}.{doc['metadata']['name']}.*.json")))
    target = out / f"{stem}.{doc['kind']}.{doc['metadata']['name']}.{n}.json"
    target.write_text(json.dumps(config, indent=2))


# What may differ between the gateway of docker-compose and a Kubernetes gateway: the public
# URL, the names of the clusters and hosts the filter polls, and the internal token. Everything
# else (rules, claims, intervals, limits, the CORS preflight bypass) must match, so that a
# change to one is made to the other.
SITE_SPECIFIC = {
    ("issuer",),
    ("remote_jwks", "cluster"),
    ("remote_jwks", "authority"),
    ("remote_revocations", "cluster"),
    ("remote_revocations", "authority"),
    ("remote_revocations", "bearer_token"),
}


def reference(envoy_yaml):
    """The wasm filter configuration (JSON) of a static Envoy config."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("@type") == "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm":
                found.append(json.loads(node["config"]["configuration"]["value"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(pathlib.Path(envoy_yaml).read_text()))
    if len(found) != 1:
        raise SystemExit(f"{envoy_yaml}: expected one wasm filter configuration, found {len(found)}")
    return found[0]


def cors_reference(envoy_yaml):
    """The CorsPolicy (typed_per_filter_config) of a static Envoy config."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("@type") == "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy":
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(pathlib.Path(envoy_yaml).read_text()))
    if len(found) != 1:
        raise SystemExit(f"{envoy_yaml}: expected one CORS policy, found {len(found)}")
    return found[0]


def cors_differences(reference, docs):
    """How the CORS policies of one rendered kustomization differ from one another, from the
    reference's methods, headers and max age, and from auth-api's AUTH_CORS_ALLOWED_ORIGINS.
    Every HTTPRoute rule with a backend must carry one: a rule added without it would refuse
    its preflights."""
    out = []
    policies = []  # (where, policy)
    for doc in docs:
        name = (doc.get("metadata") or {}).get("name")
        spec = doc.get("spec") or {}
        if doc.get("kind") == "HTTPRoute":
            for i, rule in enumerate(spec.get("rules") or []):
                found = [f.get("cors") for f in rule.get("filters") or [] if f.get("type") == "CORS"]
                if rule.get("backendRefs") and len(found) != 1:
                    out.append(f"HTTPRoute {name} rule {i}: {len(found)} CORS filters, expected 1")
                policies += [(f"HTTPRoute {name} rule {i}", c or {}) for c in found]
        elif doc.get("kind") == "SecurityPolicy" and "cors" in spec:
            policies.append((f"SecurityPolicy {name}", spec["cors"]))
    expected = {
        "allowMethods": reference.get("allow_methods", ""),
        "allowHeaders": reference.get("allow_headers", ""),
        "exposeHeaders": reference.get("expose_headers", ""),
    }
    origins = {}
    for label, policy in policies:
        for field, want in expected.items():
            got = ", ".join(str(v) for v in policy.get(field) or [])
            if got.lower() != want.lower():
                out.append(f"{label}: {field} {got!r} where the reference has {want!r}")
        if str(policy.get("maxAge")) != str(reference.get("max_age")):
            out.append(f"{label}: maxAge {policy.get('maxAge')} where the reference has {reference.get('max_age')}")
        if bool(policy.get("allowCredentials")) != bool(reference.get("allow_credentials")):
            out.append(f"{label}: allowCredentials unlike the reference's allow_credentials")
        origins[label] = sorted(policy.get("allowOrigins") or [])
    configmaps = [
        d for d in docs
        if d.get("kind") == "ConfigMap" and (d.get("metadata") or {}).get("name") == "auth-api"
    ]
    if configmaps and policies:
        raw = (configmaps[0].get("data") or {}).get("AUTH_CORS_ALLOWED_ORIGINS", "")
        origins["ConfigMap auth-api AUTH_CORS_ALLOWED_ORIGINS"] = sorted(
            o.strip() for o in raw.split(",") if o.strip()
        )
    if len({tuple(v) for v in origins.values()}) > 1:
        for label, value in origins.items():
            out.append(f"the allowed origins differ: {label}: {value}")
    return out


def differences(expected, actual, path=()):
    if path in SITE_SPECIFIC:
        return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual)):
            sub = path + (key,)
            if sub in SITE_SPECIFIC:
                continue
            if key not in actual:
                out.append(f"{'.'.join(sub)} is missing")
            elif key not in expected:
                out.append(f"{'.'.join(sub)} is not in the reference")
            else:
                out += differences(expected[key], actual[key], sub)
        return out
    if expected != actual:
        return [f"{'.'.join(path) or '(top)'}: {json.dumps(actual)} where the reference has {json.dumps(expected)}"]
    return []


# Argo CD's sync waves (argocd.argoproj.io/sync-wave, 0 when absent).
WAVE = "argocd.argoproj.io/sync-wave"
HOOK = "argocd.argoproj.io/hook"


def wave(doc):
    return int(((doc.get("metadata") or {}).get("annotations") or {}).get(WAVE, "0"))


def argo_order_problems(docs):
    """A Job that is an Argo CD hook must run in the Sync phase, after (a lower wave than) the
    Namespace, ServiceAccount, ConfigMaps and Secrets-in-the-manifests it needs, and before the
    Deployments: a PreSync hook runs before the Sync phase creates any of them, so on a first
    sync its pods cannot start."""
    out = []
    by_kind_name = {(d.get("kind"), (d.get("metadata") or {}).get("name")): d for d in docs}
    for job in docs:
        annotations = (job.get("metadata") or {}).get("annotations") or {}
        if job.get("kind") != "Job" or HOOK not in annotations:
            continue
        name = job["metadata"]["name"]
        if annotations[HOOK] != "Sync":
            out.append(f"Job {name}: hook {annotations[HOOK]}, expected Sync (the app's resources"
                       " do not exist before the Sync phase on a first sync)")
        pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
        needs = [("Namespace", job["metadata"].get("namespace"))]
        needs.append(("ServiceAccount", pod.get("serviceAccountName", "default")))
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    needs.append(("ConfigMap", source["configMapRef"]["name"]))
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    needs.append(("ConfigMap", ref["name"]))
        for need in needs:
            dep = by_kind_name.get(need)
            if dep is not None and wave(dep) >= wave(job):
                out.append(f"Job {name} (wave {wave(job)}) needs {need[0]} {need[1]}, which is in"
                           f" wave {wave(dep)}: it must be in an earlier one")
        for dep in docs:
            if dep.get("kind") == "Deployment" and wave(dep) <= wave(job):
                out.append(f"Deployment {dep['metadata']['name']} is in wave {wave(dep)}: it must"
                           f" come after Job {name} (wave {wave(job)})")
    return out


# The listeners whose peers must be named: the public HTTP port (the gateway and Prometheus) and
# the internal one (the gateway). gRPC stays open to the cluster's services.
PINNED_PORTS = {"http", 8080, "internal", 8081}
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}


def network_problems(docs):
    """Who may reach auth-api's public and internal ports, and whose client-address header it
    believes. Any pod that reaches 8080 from inside AUTH_TRUSTED_PROXIES can choose its own
    rate-limit bucket (x-envoy-external-address), so 8080 is open to named namespaces only (the
    gateway's, Prometheus's) and the trusted range must be narrow."""
    out = []
    has_gateway = any(d.get("kind") == "Gateway" for d in docs)
    for doc in docs:
        name = (doc.get("metadata") or {}).get("name")
        spec = doc.get("spec") or {}
        if doc.get("kind") == "NetworkPolicy" and name == "auth-api":
            monitoring = False
            for i, rule in enumerate(spec.get("ingress") or []):
                ports = {p.get("port") for p in rule.get("ports") or []}
                if rule.get("ports") and not ports & PINNED_PORTS:
                    continue
                peers = rule.get("from") or []
                if not peers:
                    out.append(f"NetworkPolicy {name} rule {i}: ports {sorted(map(str, ports)) or 'all'}"
                               " open to every peer")
                for peer in peers:
                    ns = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
                    pods = (peer.get("podSelector") or {}).get("matchLabels") or {}
                    if "ipBlock" in peer or "kubernetes.io/metadata.name" not in ns:
                        out.append(f"NetworkPolicy {name} rule {i}: a peer not pinned to one"
                                   f" namespace by kubernetes.io/metadata.name: {peer}")
                    elif ns == MONITORING and not pods:
                        monitoring = monitoring or ports & {"http", 8080} or not ports
                    elif has_gateway and not pods:
                        out.append(f"NetworkPolicy {name} rule {i}: the namespace {ns} without a"
                                   " podSelector naming the gateway's pods")
            if not monitoring:
                out.append(f"NetworkPolicy {name}: Prometheus (namespace monitoring) cannot reach"
                           " port http")
        if doc.get("kind") == "ConfigMap" and name == "auth-api":
            raw = (doc.get("data") or {}).get("AUTH_TRUSTED_PROXIES")
            for entry in (raw or "").split(","):
                entry = entry.strip()
                if not entry:
                    continue
                try:
                    net = ipaddress.ip_network(entry, strict=False)
                except ValueError as e:
                    out.append(f"ConfigMap {name}: AUTH_TRUSTED_PROXIES {entry!r}: {e}")
                    continue
                widest = 20 if net.version == 4 else 56
                if net.prefixlen < widest:
                    out.append(f"ConfigMap {name}: AUTH_TRUSTED_PROXIES {entry} is wider than /{widest}:"
                               " the gateway pods' range, not the pod network")
    return out


def monitoring_problems(docs, alerts_file):
    """The ServiceMonitors give the job the alert rules select, and the PrometheusRules carry
    exactly alerts.yaml's groups (overlays/monitoring/generate.py writes them)."""
    out = []
    alerts = yaml.safe_load(pathlib.Path(alerts_file).read_text())
    jobs = set(re.findall(r'job="([^"]+)"', json.dumps(alerts).replace('\\"', '"')))
    services = [d for d in docs if d.get("kind") == "Service"]
    monitors = [d for d in docs if d.get("kind") == "ServiceMonitor"]
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if not monitors or not rules:
        out.append("no ServiceMonitor or no PrometheusRule in any kustomization")
    scraped = set()
    for monitor in monitors:
        name = monitor["metadata"]["name"]
        spec = monitor.get("spec") or {}
        namespace = monitor["metadata"].get("namespace")
        want = (spec.get("selector") or {}).get("matchLabels") or {}
        if spec.get("jobLabel") or spec.get("namespaceSelector"):
            out.append(f"ServiceMonitor {name}: jobLabel/namespaceSelector set: the job would not"
                       " be the Service's name")
        for endpoint in spec.get("endpoints") or []:
            matched = {
                s["metadata"]["name"]
                for s in services
                if s["metadata"].get("namespace") == namespace
                and want.items() <= ((s["metadata"].get("labels") or {}).items())
                and any(p.get("name") == endpoint.get("port") for p in s["spec"].get("ports", []))
            }
            if len(matched) != 1 or endpoint.get("path", "/metrics") != "/metrics":
                out.append(f"ServiceMonitor {name}: port {endpoint.get('port')} path"
                           f" {endpoint.get('path')} scrapes Services {sorted(matched)}, expected"
                           " one Service's /metrics")
            scraped |= matched
    if "auth-api" in jobs and "auth-api" not in scraped:
        out.append(f"the alert rules select job=\"auth-api\"; the ServiceMonitors give {sorted(scraped)}")
    for rule in rules:
        if (rule.get("spec") or {}).get("groups") != alerts["groups"]:
            out.append(f"PrometheusRule {rule['metadata']['name']}: its groups differ from"
                       f" {alerts_file}'s: run deploy/kubernetes/overlays/monitoring/generate.py")
    return out


def image_problems(docs):
    """The example upstream echoes requests back, Authorization included: it has its own image
    (the Dockerfile's `echo-upstream` target), and auth-api's image is never used to run it."""
    out = []
    for doc in docs:
        pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            runs_echo = any("echo-upstream" in str(a) for a in (c.get("command") or []) + (c.get("args") or []))
            image = c.get("image", "").rsplit("/", 1)[-1].split(":")[0].split("@")[0]
            if runs_echo != (image == "echo-upstream"):
                out.append(f"{doc.get('kind')} {doc['metadata']['name']} container {c.get('name')}:"
                           f" image {c.get('image')} {'runs' if runs_echo else 'without'} echo-upstream")
    return out


def dockerfile_problems(dockerfile):
    """The production stage `runtime` ships auth-api only, not the example upstream."""
    stage, out = None, []
    for line in pathlib.Path(dockerfile).read_text().splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            stage = words[-1] if "AS" in [w.upper() for w in words] else None
        elif stage == "runtime" and "echo-upstream" in line and not line.lstrip().startswith("#"):
            out.append(f"the `runtime` stage mentions echo-upstream: {line.strip()}")
    return out


if __name__ == "__main__":
    main()
