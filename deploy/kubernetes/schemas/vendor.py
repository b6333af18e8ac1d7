"""Extracts the OpenAPI v3 schemas of the custom resources the overlays use from upstream CRD
files, into one YAML file per kind and version here, each headed by its source.

Not run by CI (which has no network): run by hand when moving to newer upstream CRDs, from
checkouts of the upstream repositories, e.g.

    python3 deploy/kubernetes/schemas/vendor.py \
        --repo istio/api --commit <sha> --license Apache-2.0 \
        --crds <istio/api>/kubernetes/customresourcedefinitions.gen.yaml \
        --path kubernetes/customresourcedefinitions.gen.yaml \
        --kinds WasmPlugin/v1alpha1 AuthorizationPolicy/v1 EnvoyFilter/v1alpha3

Only the schema is kept (no CRD, no status): what `validate.py` checks a resource against.
"""

import argparse
import pathlib

import yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--license", required=True)
    parser.add_argument("--crds", required=True, nargs="+", help="CRD YAML files")
    parser.add_argument("--path", required=True, nargs="+", help="their paths in the repo")
    parser.add_argument("--kinds", required=True, nargs="+", help="Kind/version")
    args = parser.parse_args()
    wanted = set(args.kinds)
    here = pathlib.Path(__file__).parent
    for crd_file, repo_path in zip(args.crds, args.path):
        text = pathlib.Path(crd_file).read_text()
        for doc in yaml.safe_load_all(text):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            kind = spec["names"]["kind"]
            for version in spec["versions"]:
                key = f"{kind}/{version['name']}"
                if key not in wanted:
                    continue
                wanted.discard(key)
                schema = version["schema"]["openAPIV3Schema"]
                schema.get("properties", {}).pop("status", None)
                out = here / f"{spec['group']}_{kind.lower()}_{version['name']}.yaml"
                header = (
                    f"# The OpenAPI v3 schema of {kind} {spec['group']}/{version['name']},\n"
                    f"# from {args.repo} {repo_path} at commit {args.commit}\n"
                    f"# (license {args.license}), written by vendor.py (status removed).\n"
                )
                body = yaml.safe_dump(
                    {"group": spec["group"], "version": version["name"], "kind": kind,
                     "schema": schema},
                    sort_keys=True,
                    width=100,
                )
                out.write_text(header + body)
                print(f"{out.name}: {len(body)} bytes")
    if wanted:
        raise SystemExit(f"not found: {sorted(wanted)}")


if __name__ == "__main__":
    main()
