#!/usr/bin/env python3
"""Compares the chart's rendering with the Kustomize manifests it reproduces.

    compare.py KUSTOMIZE.yaml HELM.yaml

Both are multi-document YAML. Objects are matched by kind, namespace and name, normalised
(below), and every remaining difference is printed with its path; exit status 1 if any.

Normalisation, and nothing else:
  - Helm's own labels are dropped wherever labels appear (metadata, selectors, pod templates,
    anti-affinity): helm.sh/chart, app.kubernetes.io/managed-by, app.kubernetes.io/instance,
    app.kubernetes.io/version;
  - generated certificate data (Secret data values, caBundle) is replaced by a placeholder:
    each side generates its own pair;
  - the policy ConfigMap's document is compared as parsed YAML (the chart renders values with
    toYaml, which drops comments and sorts keys).
Objects only in KUSTOMIZE.yaml named with --by-design KIND/NAMESPACE/NAME, and differences at
a path named with --known PATH, are expected: printed with the reason given, not failed. A
--known or --by-design that does not occur fails too, so none outlives what it excuses.
"""
import argparse
import sys

import yaml

HELM_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
}
GENERATED = "<generated>"


def strip_helm_labels(node):
    if isinstance(node, dict):
        for key in ("labels", "matchLabels", "selector"):
            # A Service's selector is a plain label map too (a Deployment's is not).
            if isinstance(node.get(key), dict) and all(isinstance(v, str) for v in node[key].values()):
                for label in HELM_LABELS:
                    node[key].pop(label, None)
        for value in node.values():
            strip_helm_labels(value)
    elif isinstance(node, list):
        for value in node:
            strip_helm_labels(value)


def blank_ca_bundles(node):
    if isinstance(node, dict):
        if "caBundle" in node:
            node["caBundle"] = GENERATED
        for value in node.values():
            blank_ca_bundles(value)
    elif isinstance(node, list):
        for value in node:
            blank_ca_bundles(value)


def normalise(obj):
    strip_helm_labels(obj)
    blank_ca_bundles(obj)
    if obj.get("kind") == "Secret":
        obj["data"] = {key: GENERATED for key in obj.get("data", {})}
    if obj.get("kind") == "ConfigMap" and obj["metadata"]["name"].endswith("-policy"):
        obj["data"] = {key: yaml.safe_load(text) for key, text in obj.get("data", {}).items()}
    return obj


def load(path):
    objects = {}
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            meta = doc["metadata"]
            key = f'{doc["kind"]}/{meta.get("namespace", "")}/{meta["name"]}'
            assert key not in objects, f"{path}: {key} twice"
            objects[key] = normalise(doc)
    return objects


def diff(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}.{key}"
            if key not in b:
                out.append(f"{where}: only in kustomize: {a[key]!r}")
            elif key not in a:
                out.append(f"{where}: only in helm: {b[key]!r}")
            else:
                diff(a[key], b[key], where, out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(f"{path}: kustomize {a!r} != helm {b!r}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kustomize")
    parser.add_argument("helm")
    parser.add_argument("--by-design", action="append", default=[],
                        help="KIND/NAMESPACE/NAME=REASON: expected only in the Kustomize rendering")
    parser.add_argument("--known", action="append", default=[],
                        help="PATH=REASON: an expected difference at PATH")
    args = parser.parse_args()
    by_design = dict(item.split("=", 1) for item in args.by_design)
    known = dict(item.split("=", 1) for item in args.known)
    base, chart = load(args.kustomize), load(args.helm)
    problems = []
    for key in sorted(set(base) - set(chart)):
        if key in by_design:
            print(f"compare.py: by design: {key}: only in kustomize ({by_design.pop(key)})")
        else:
            problems.append(f"{key}: only in kustomize")
    for key in sorted(set(chart) - set(base)):
        problems.append(f"{key}: only in helm")
    for key in sorted(set(base) & set(chart)):
        out = []
        diff(base[key], chart[key], key, out)
        for line in out:
            path = line.split(": ", 1)[0]
            if path in known:
                print(f"compare.py: known: {line} ({known.pop(path)})")
            else:
                problems.append(line)
    problems += [f"--by-design {key}: no such difference" for key in by_design]
    problems += [f"--known {path}: no such difference" for path in known]
    same = len(set(base) & set(chart))
    if problems:
        print("\n".join(problems))
        print(f"compare.py: {len(problems)} difference(s); {same} object(s) compared")
        sys.exit(1)
    print(f"compare.py: {same} object(s) equal after normalisation" + (", but for the expected differences above" if args.known else ""))


if __name__ == "__main__":
    main()
