#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into fuzz/corpus/<target>/ from the repository's real
fixtures: the apiserver's AdmissionReviews of Spark 4.3 pods (tests/fixtures), the example and
test policies, and a handful of hand-picked quantities and templates. Derived seeds (a sizing
pod wrapped into a review, a review without managedFields, a policy ConfigMap review) are named
for what they change. The corpora are not committed: run this before fuzzing (fuzz/run.sh does).

Usage: fuzz/seed.py            (run from anywhere; rewrites only the seed files it names)
"""
import copy
import hashlib
import json
import pathlib

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
FIXTURES = ROOT / "tests" / "fixtures" / "spark-4.3"


def write(target, name, content):
    directory = FUZZ / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    # A content hash in the name keeps seeds apart from what libFuzzer adds (bare hashes).
    digest = hashlib.sha1(content).hexdigest()[:8]
    (directory / f"seed-{name}-{digest}").write_bytes(content)


def compact(value):
    return json.dumps(value, separators=(",", ":"))


def without_managed_fields(review):
    review = copy.deepcopy(review)
    review["request"]["object"]["metadata"].pop("managedFields", None)
    return review


def pod_reviews():
    reviews = {}
    for path in sorted(FIXTURES.glob("*-review.json")) + sorted(
        (FIXTURES / "cluster-mode").glob("*-review.json")
    ):
        review = json.loads(path.read_text())
        if review["request"]["kind"]["kind"] != "Pod":
            continue
        name = f"{path.parent.name}-{path.stem}"
        reviews[name] = review
    return reviews


def admission_review():
    reviews = pod_reviews()
    for name, review in reviews.items():
        write("admission_review", name, compact(review))
        write("admission_review", f"{name}-no-managed-fields", compact(without_managed_fields(review)))
    # The sizing captures are pods, not reviews: wrap each into the executor review's envelope.
    envelope = without_managed_fields(reviews["spark-4.3-executor-review"])
    for path in sorted((FIXTURES / "sizing").glob("*.json")):
        pod = json.loads(path.read_text())["pod"]
        review = copy.deepcopy(envelope)
        review["request"]["object"] = pod
        review["request"]["name"] = pod["metadata"].get("name", "")
        review["request"]["namespace"] = pod["metadata"].get("namespace", "")
        write("admission_review", f"sizing-{path.stem}-wrapped", compact(review))


def policies():
    paths = sorted((ROOT / "examples" / "policies").glob("*.yaml"))
    paths += sorted((ROOT / "tests" / "data").rglob("policy*.yaml"))
    return {p.stem: p.read_text() for p in paths}


def policy_text():
    for name, text in policies().items():
        write("policy_text", name, text)
    write("policy_text", "empty", "")
    write("policy_text", "json", '{"rules":[{"name":"a","labels":{"x":"{app_name}"}}]}')


def policy_configmap_review():
    base = json.loads((FIXTURES / "cluster-mode" / "configmap-review.json").read_text())
    base["request"]["object"]["metadata"].pop("managedFields", None)
    write("policy_configmap_review", "spark-conf-configmap-unlabelled", compact(base))
    for name, text in policies().items():
        review = copy.deepcopy(base)
        meta = review["request"]["object"]["metadata"]
        meta["name"] = "spark-admission-policy"
        meta["labels"] = {"spark-admission.io/policy": "true"}
        review["request"]["object"]["data"] = {"policy.yaml": text}
        review["request"]["object"].pop("immutable", None)
        write("policy_configmap_review", f"policy-configmap-{name}", compact(review))
        review["request"]["operation"] = "UPDATE"
        review["request"]["oldObject"] = review["request"]["object"]
        write("policy_configmap_review", f"policy-configmap-{name}-update", compact(review))


def quantity():
    for text in ["500m", "2432Mi", "1.5Gi", "1e3", "-0.1n", "4Ti", "2550136832", "0.5", "8E", "1E-9"]:
        write("quantity", text.replace(".", "_"), text)


def template_labels():
    for text in ["{app_name}", "{namespace}-{app_name}", "{{x}}", "Nightly ETL (prod)", "-a-"]:
        write("template_labels", "text", text)


for target in [admission_review, policy_text, policy_configmap_review, quantity, template_labels]:
    target()
