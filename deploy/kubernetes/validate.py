"""Validates rendered Kubernetes manifests without a cluster (run by `cargo xtask manifests`).

- Built-in kinds: against the Kubernetes OpenAPI schemas bundled in `kubernetes-validate`,
  strictly (an unknown field is an error, as the API server's strict field validation makes it).
- Custom resources (Istio, Envoy Gateway, Gateway API): against the schemas vendored in
  schemas/ (see vendor.py), made strict the same way: every object that lists its properties
  and neither allows others nor preserves unknown fields refuses any other. The CEL rules
  (`x-kubernetes-validations`) are not evaluated: only an API server can.
- A kind with no schema is an error, never skipped.
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
"""

import argparse
import copy
import json
import pathlib
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
    args = parser.parse_args()
    schemas = load_schemas(args.schemas)
    failures = 0
    checked = 0
    for file in args.files:
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
            if errors:
                failures += 1
                for error in errors:
                    print(f"ERROR {label}: {error}")
            else:
                print(f"ok    {label} ({how})")
            for config in plugin_configs(doc):
                if args.plugin_configs:
                    write_plugin_config(config, doc, file, args.plugin_configs)
                if args.filter_config_like:
                    checked += 1
                    drift = differences(reference(args.filter_config_like), config)
                    if drift:
                        failures += 1
                        for line in drift:
                            print(f"ERROR {label}: unlike {args.filter_config_like}: {line}")
                    else:
                        print(f"ok    {label}: the filter configuration of {args.filter_config_like}")
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
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
        for e in errors:
            print(f"ERROR {compose}: {where(e)}: {e.message}")
        if errors:
            failures += 1
        else:
            print(f"ok    {compose} (Compose Specification, before interpolation)")
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


if __name__ == "__main__":
    main()
