"""Checks the objects that kustomize rendered from each kustomization (run by validate.sh).

usage: validate.py --kubernetes-versions 1.34.0,1.37.0 [--render-failed NAME]... NAME=RENDERED.yaml...

For every object:
- the Kubernetes OpenAPI schema of each given release, strict (kubernetes-validate: an unknown
  field, a wrong type or a missing required field is an error; so is a kind/apiVersion that
  release has no schema for);
- the rules the API server or the cluster enforces that a schema cannot express, and the
  settings this deployment relies on: resource quantities, the read-only non-root pod,
  volumes for every mount, the probes and their ports, the drain time against the grace
  period, Service/PDB selectors and HPA target, the HPA's custom metric against the
  prometheus-adapter rule shipped in the ConfigMap (parsed as YAML, fields checked), and the
  Indexed Job (backoffLimitPerIndex rules, HARDY_SHARDS equal to spec.completions).

Prints one line per kustomization (OK or FAIL with the object count) after its errors, then a
summary; exits 1 on any error.
"""

import argparse
import re
import sys

import yaml
from kubernetes_validate import utils as kv

# k8s.io/apimachinery resource.Quantity, as a regular expression.
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
# The uid/gid the image runs as (docker/).
HARDY_UID = 10001
# Directories the read-only image must be given as volumes.
WRITABLE_DIRS = ("/var/lib/hardy", "/tmp")
# hardy serve's default drain time (--shutdown-timeout / HARDY_SHUTDOWN_TIMEOUT), seconds.
DEFAULT_SHUTDOWN_TIMEOUT = 30
# prometheus-adapter's configuration (pkg/config): the keys it knows at each level.
ADAPTER_TOP_KEYS = {"rules", "resourceRules", "externalRules"}
ADAPTER_RULE_KEYS = {"seriesQuery", "seriesFilters", "resources", "name", "metricsQuery"}
ADAPTER_RESOURCES_KEYS = {"template", "overrides", "namespaced"}
ADAPTER_NAME_KEYS = {"matches", "as"}
ADAPTER_TEMPLATE_FIELDS = {"Series", "LabelMatchers", "GroupBy", "GroupBySlice", "LabelValuesByName"}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class Checker:
    """Collects the errors of one kustomization's objects."""

    def __init__(self, name, objects, everything, versions):
        self.name = name
        self.objects = objects
        self.everything = everything  # the objects of every kustomization in this run
        self.versions = versions
        self.errors = []
        self.notes = []

    def error(self, obj, message):
        self.errors.append(f"{ident(obj)}: {message}" if obj is not None else message)

    def run(self):
        seen = set()
        for obj in self.objects:
            if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
                self.error(None, f"not a Kubernetes object: {str(obj)[:80]}")
                continue
            key = (obj["kind"], obj.get("metadata", {}).get("name"))
            if key in seen:
                self.error(obj, "defined twice")
            seen.add(key)
            self.schema(obj)
            try:
                self.quantities(obj)
                if obj["kind"] in POD_TEMPLATE_KINDS:
                    self.pod(obj)
                check = getattr(self, "kind_" + obj["kind"], None)
                if check:
                    check(obj)
            except (KeyError, TypeError, AttributeError, ValueError) as e:
                # A malformed object (the schema check has said how): report, do not crash.
                self.error(obj, f"malformed, the remaining checks stopped at {type(e).__name__}: {e}")
        if not self.objects:
            self.error(None, "renders no objects")

    def schema(self, obj):
        for version in self.versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top level)"
                self.error(obj, f"Kubernetes {version} schema (strict): {path}: {e.message}")
            except kv.SchemaNotFoundError as e:
                self.error(obj, f"Kubernetes {version}: {e.message} (unknown kind or removed API)")
            except kv.VersionNotSupportedError as e:
                self.error(obj, e.message)

    def quantities(self, obj):
        """Resource quantities are strings in the schema; the API server parses them."""

        def check(value, where):
            if isinstance(value, bool) or not QUANTITY.match(str(value)):
                self.error(obj, f"{where}: {value!r} is not a Kubernetes quantity")

        for path, container in containers_of(obj):
            for part in ("requests", "limits"):
                for res, value in (container.get("resources", {}).get(part) or {}).items():
                    check(value, f"{path}.resources.{part}.{res}")
            for env in container.get("env") or []:
                divisor = (env.get("valueFrom") or {}).get("resourceFieldRef", {}).get("divisor")
                if divisor is not None:
                    check(divisor, f"{path}.env[{env.get('name')}].valueFrom.resourceFieldRef.divisor")
        for volume in pod_spec(obj).get("volumes") or []:
            size = (volume.get("emptyDir") or {}).get("sizeLimit")
            if size is not None:
                check(size, f"volumes[{volume.get('name')}].emptyDir.sizeLimit")
        if obj["kind"] == "PersistentVolumeClaim":
            for res, value in (obj["spec"].get("resources", {}).get("requests") or {}).items():
                check(value, f"spec.resources.requests.{res}")
        if obj["kind"] == "HorizontalPodAutoscaler":
            for i, metric in enumerate(obj["spec"].get("metrics") or []):
                target = (metric.get(lower_first(metric.get("type", ""))) or {}).get("target") or {}
                for field in ("averageValue", "value"):
                    if field in target:
                        check(target[field], f"spec.metrics[{i}].target.{field}")

    def pod(self, obj):
        """The image runs as uid 10001 with a read-only root file system."""
        spec = pod_spec(obj)
        sc = spec.get("securityContext") or {}
        if sc.get("runAsNonRoot") is not True:
            self.error(obj, "pod securityContext.runAsNonRoot must be true")
        for field in ("runAsUser", "runAsGroup", "fsGroup"):
            if sc.get(field) != HARDY_UID:
                self.error(obj, f"pod securityContext.{field} must be {HARDY_UID} (the image's user)")
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        for path, c in containers_of(obj):
            csc = c.get("securityContext") or {}
            if csc.get("readOnlyRootFilesystem") is not True:
                self.error(obj, f"{path}.securityContext.readOnlyRootFilesystem must be true")
            if csc.get("allowPrivilegeEscalation") is not False:
                self.error(obj, f"{path}.securityContext.allowPrivilegeEscalation must be false")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                self.error(obj, f"{path}.securityContext.capabilities.drop must contain ALL")
            image = c.get("image", "")
            tag = image.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
            if not tag and "@" not in image:
                self.error(obj, f"{path}.image {image!r} has no tag")
            elif tag == "latest":
                self.error(obj, f"{path}.image {image!r}: name a tag, not latest")
            for part in ("requests", "limits"):
                got = (c.get("resources") or {}).get(part) or {}
                for res in ("cpu", "memory"):
                    if res not in got:
                        self.error(obj, f"{path}.resources.{part}.{res} is not set")
            device = next((e.get("value") for e in c.get("env") or [] if e.get("name") == "HARDY_DEVICE"), None)
            if str(device).startswith(("cuda", "gpu")):
                gpus = ((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu")
                if not gpus or int_or(gpus) == 0:
                    self.error(obj, f"{path}: HARDY_DEVICE={device} but resources.limits has no nvidia.com/gpu")
                elif not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations") or []):
                    self.error(obj, f"{path}: requests nvidia.com/gpu but the pod tolerates no nvidia.com/gpu taint")
                else:
                    self.notes.append(f"{path}: HARDY_DEVICE={device}, nvidia.com/gpu={gpus}")
            mounts = c.get("volumeMounts") or []
            for m in mounts:
                if m.get("name") not in volumes:
                    self.error(obj, f"{path}.volumeMounts {m.get('name')!r}: no such volume in the pod")
            for d in WRITABLE_DIRS:
                if not any(m.get("mountPath") == d for m in mounts):
                    self.error(obj, f"{path}: nothing mounted at {d} (the root file system is read-only)")
        for name, volume in volumes.items():
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and not any(
                o.get("kind") == "PersistentVolumeClaim" and o["metadata"].get("name") == claim
                for o in self.everything
            ):
                self.error(
                    obj,
                    f"volume {name!r} claims PVC {claim!r}, which no kustomization validated "
                    "in this run creates",
                )

    def kind_Deployment(self, obj):
        spec = pod_spec(obj)
        for path, c in containers_of(obj):
            ports = c.get("ports") or []
            for probe, want in (
                ("startupProbe", None),
                ("readinessProbe", "/v2/health/ready"),
                ("livenessProbe", "/v2/health/live"),
            ):
                p = c.get(probe)
                if not p:
                    self.error(obj, f"{path}.{probe} is missing")
                    continue
                get = p.get("httpGet") or {}
                if want and get.get("path") != want:
                    self.error(obj, f"{path}.{probe}.httpGet.path is {get.get('path')!r}, want {want}")
                if port_number(get.get("port"), ports) is None:
                    self.error(obj, f"{path}.{probe}.httpGet.port {get.get('port')!r} is no container port")
            env = {e.get("name"): e.get("value") for e in c.get("env") or []}
            drain = int(env.get("HARDY_SHUTDOWN_TIMEOUT") or DEFAULT_SHUTDOWN_TIMEOUT)
            sleep = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace <= drain + sleep:
                self.error(
                    obj,
                    f"terminationGracePeriodSeconds {grace} must exceed preStop sleep {sleep} s + "
                    f"HARDY_SHUTDOWN_TIMEOUT {drain} s, or requests are cut off while draining",
                )
        ann = obj["spec"]["template"].get("metadata", {}).get("annotations") or {}
        ports = [p for _, c in containers_of(obj) for p in c.get("ports") or []]
        if ann.get("prometheus.io/scrape") != "true":
            self.error(obj, 'pod annotation prometheus.io/scrape must be "true" (the HPA metric)')
        if ann.get("prometheus.io/path") != "/metrics":
            self.error(obj, "pod annotation prometheus.io/path must be /metrics")
        if port_number(int_or(ann.get("prometheus.io/port")), ports) is None:
            self.error(obj, f"pod annotation prometheus.io/port {ann.get('prometheus.io/port')!r} is no container port")
        selector = obj["spec"].get("selector", {}).get("matchLabels") or {}
        labels = obj["spec"]["template"].get("metadata", {}).get("labels") or {}
        if not selector or not matches(selector, labels):
            self.error(obj, "spec.selector.matchLabels must be non-empty and match the pod template's labels")
        if "replicas" in obj["spec"] and self.find("HorizontalPodAutoscaler", lambda h: targets(h, obj)):
            self.error(obj, "spec.replicas is set while an HPA scales this Deployment: each apply would reset it")

    def kind_Service(self, obj):
        selector = obj["spec"].get("selector") or {}
        pods = self.find("Deployment", lambda d: matches(selector, d["spec"]["template"]["metadata"].get("labels", {})))
        if not selector or not pods:
            self.error(obj, f"selector {selector} selects the pods of no Deployment here")
            return
        ports = [p for _, c in containers_of(pods[0]) for p in c.get("ports") or []]
        for sp in obj["spec"].get("ports") or []:
            if port_number(sp.get("targetPort", sp.get("port")), ports) is None:
                self.error(obj, f"port {sp.get('name')}: targetPort {sp.get('targetPort')!r} is no container port")

    def kind_PodDisruptionBudget(self, obj):
        selector = obj["spec"].get("selector", {}).get("matchLabels") or {}
        if not selector or not self.find(
            "Deployment", lambda d: matches(selector, d["spec"]["template"]["metadata"].get("labels", {}))
        ):
            self.error(obj, f"selector {selector} selects the pods of no Deployment here")

    def kind_HorizontalPodAutoscaler(self, obj):
        spec = obj["spec"]
        ref = spec.get("scaleTargetRef", {})
        if not self.find(ref.get("kind"), lambda o: o["metadata"]["name"] == ref.get("name")):
            self.error(obj, f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not in this kustomization")
        if spec.get("minReplicas", 1) > spec.get("maxReplicas", 0):
            self.error(obj, "minReplicas exceeds maxReplicas")
        if "stabilizationWindowSeconds" not in (spec.get("behavior", {}).get("scaleDown") or {}):
            self.error(obj, "behavior.scaleDown.stabilizationWindowSeconds is not set")
        served = {name for cm in self.find("ConfigMap", lambda c: True) for name in adapter_metrics(cm)}
        for i, metric in enumerate(spec.get("metrics") or []):
            if metric.get("type") == "Pods":
                name = metric["pods"]["metric"]["name"]
                if name not in served:
                    self.error(
                        obj,
                        f"spec.metrics[{i}]: custom metric {name!r} is served by no prometheus-adapter "
                        f"rule in this kustomization's ConfigMaps (served: {sorted(served) or 'none'})",
                    )
                else:
                    self.notes.append(f"HPA metric {name} <- prometheus-adapter rule")

    def kind_ConfigMap(self, obj):
        text = (obj.get("data") or {}).get("config.yaml")
        if text is None or "prometheus-adapter" not in obj["metadata"]["name"]:
            return
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as e:
            self.error(obj, f"data.config.yaml is not YAML: {e}")
            return
        if not isinstance(config, dict) or not isinstance(config.get("rules"), list) or not config["rules"]:
            self.error(obj, "data.config.yaml must be a mapping with a non-empty `rules` list")
            return
        unknown = set(config) - ADAPTER_TOP_KEYS
        if unknown:
            self.error(obj, f"data.config.yaml: unknown prometheus-adapter keys {sorted(unknown)}")
        for i, rule in enumerate(config["rules"]):
            where = f"data.config.yaml rules[{i}]"
            if not isinstance(rule, dict):
                self.error(obj, f"{where} is not a mapping")
                continue
            for field, known in (
                (None, ADAPTER_RULE_KEYS),
                ("resources", ADAPTER_RESOURCES_KEYS),
                ("name", ADAPTER_NAME_KEYS),
            ):
                part = rule if field is None else rule.get(field) or {}
                if not isinstance(part, dict):
                    self.error(obj, f"{where}.{field} is not a mapping")
                    continue
                unknown = set(part) - known
                if unknown:
                    self.error(obj, f"{where}{'.' + field if field else ''}: unknown keys {sorted(unknown)}")
            for field in ("seriesQuery", "resources", "name", "metricsQuery"):
                if not rule.get(field):
                    self.error(obj, f"{where}.{field} is missing")
            series = str(rule.get("seriesQuery", ""))
            for label in ("namespace", "pod"):
                if f'{label}!=""' not in series.replace(" ", ""):
                    self.error(obj, f'{where}.seriesQuery must require {label}!="" (the pod\'s identity)')
            overrides = (rule.get("resources") or {}).get("overrides") or {}
            for label, resources in (("namespace", {"namespace", "namespaces"}), ("pod", {"pod", "pods"})):
                if (overrides.get(label) or {}).get("resource") not in resources:
                    self.error(obj, f"{where}.resources.overrides.{label}.resource must map to the {label}")
            query = str(rule.get("metricsQuery", ""))
            fields = set(re.findall(r"<<\s*\.(\w+)", query))
            if fields - ADAPTER_TEMPLATE_FIELDS:
                unknown = sorted(fields - ADAPTER_TEMPLATE_FIELDS)
                self.error(obj, f"{where}.metricsQuery: unknown template fields {unknown}")
            for needed in ("Series", "LabelMatchers", "GroupBy"):
                if needed not in fields:
                    self.error(obj, f"{where}.metricsQuery must use <<.{needed}>>")
            try:
                re.compile(str((rule.get("name") or {}).get("matches", "")))
            except re.error as e:
                self.error(obj, f"{where}.name.matches is not a regular expression: {e}")

    def kind_Job(self, obj):
        spec = obj["spec"]
        restart = pod_spec(obj).get("restartPolicy")
        indexed = spec.get("completionMode") == "Indexed"
        if restart not in ("Never", "OnFailure"):
            self.error(obj, "a Job's pods need restartPolicy Never or OnFailure")
        if "backoffLimitPerIndex" in spec and not (indexed and restart == "Never"):
            self.error(obj, "backoffLimitPerIndex needs completionMode Indexed and restartPolicy Never")
        if "maxFailedIndexes" in spec:
            if "backoffLimitPerIndex" not in spec:
                self.error(obj, "maxFailedIndexes needs backoffLimitPerIndex")
            elif spec["maxFailedIndexes"] > spec.get("completions", 1):
                self.error(obj, "maxFailedIndexes exceeds completions")
        if "podFailurePolicy" in spec:
            if restart != "Never":
                self.error(obj, "podFailurePolicy needs restartPolicy Never")
            if spec.get("podReplacementPolicy", "Failed") != "Failed":
                self.error(obj, "podReplacementPolicy must be Failed when podFailurePolicy is set")
        if not indexed:
            return
        for path, c in containers_of(obj):
            args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
            if any(a == "--shard" or a.startswith("--shard=") for a in args):
                self.error(
                    obj, f"{path}: no --shard flag: hardy takes the shard from JOB_COMPLETION_INDEX and HARDY_SHARDS"
                )
            env = {e.get("name"): e for e in c.get("env") or []}
            if "JOB_COMPLETION_INDEX" in env:
                self.error(obj, f"{path}: JOB_COMPLETION_INDEX is set by Kubernetes, not by the manifest")
            shards = env.get("HARDY_SHARDS", {}).get("value")
            completions = spec.get("completions")
            if shards != str(completions):
                self.error(
                    obj,
                    f"{path}: env HARDY_SHARDS is {shards!r} but spec.completions is {completions!r}: "
                    "the kustomize replacement (spec.completions -> HARDY_SHARDS) did not apply",
                )
            else:
                self.notes.append(f"HARDY_SHARDS={shards} = spec.completions")

    def find(self, kind, predicate):
        return [o for o in self.objects if o.get("kind") == kind and predicate(o)]


def ident(obj):
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def lower_first(s):
    return s[:1].lower() + s[1:]


def pod_spec(obj):
    if obj.get("kind") not in POD_TEMPLATE_KINDS:
        return {}
    return ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}


def containers_of(obj):
    spec = pod_spec(obj)
    for field in ("initContainers", "containers"):
        for c in spec.get(field) or []:
            yield f"{field}[{c.get('name')}]", c


def port_number(port, ports):
    """The container port that a probe/Service/annotation port (name or number) refers to."""
    for p in ports:
        if port == p.get("name") or port == p.get("containerPort"):
            return p.get("containerPort")
    return None


def int_or(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def targets(hpa, obj):
    ref = hpa["spec"].get("scaleTargetRef", {})
    return ref.get("kind") == obj["kind"] and ref.get("name") == obj["metadata"]["name"]


def adapter_metrics(cm):
    """The custom metric names the prometheus-adapter config in ConfigMap `cm` serves."""
    try:
        config = yaml.safe_load((cm.get("data") or {}).get("config.yaml") or "")
    except yaml.YAMLError:
        return []
    if not isinstance(config, dict):
        return []
    names = []
    for rule in config.get("rules") or []:
        if not isinstance(rule, dict):
            continue
        name = rule.get("name") or {}
        series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", str(rule.get("seriesQuery", "")))
        if name.get("as"):
            names.append(name["as"])
        elif series:
            names.append(series.group(1))
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-versions", required=True)
    parser.add_argument("--render-failed", action="append", default=[], metavar="NAME")
    parser.add_argument("rendered", nargs="*", metavar="NAME=FILE")
    args = parser.parse_args()
    versions = args.kubernetes_versions.split(",")
    supported = kv.all_versions()
    for v in versions:
        if not any(s == v or kv.major_minor(s) == kv.major_minor(v) for s in supported):
            sys.exit(f"validate: kubernetes-validate {kv.__version__} has no schemas for {v}")

    renders = []
    for item in args.rendered:
        name, _, path = item.partition("=")
        with open(path) as f:
            try:
                objects = [o for o in yaml.safe_load_all(f) if o is not None]
            except yaml.YAMLError as e:
                objects, problem = [], f"kustomize output is not YAML: {e}"
            else:
                problem = None
        renders.append((name, objects, problem))
    everything = [o for _, objects, _ in renders for o in objects if isinstance(o, dict)]

    failed, total = 0, 0
    rows = [f"FAIL  {name}: kustomize could not render it" for name in args.render_failed]
    for name, objects, problem in renders:
        checker = Checker(name, objects, everything, versions)
        if problem:
            checker.error(None, problem)
        else:
            checker.run()
        for e in checker.errors:
            print(f"ERROR {name}: {e}")
        kinds = ", ".join(ident(o) for o in objects if isinstance(o, dict))
        status = "FAIL" if checker.errors else "OK"
        extra = "".join(f"; {n}" for n in checker.notes)
        rows.append(f"{status:<5} {name}: {len(objects)} object{'' if len(objects) == 1 else 's'} ({kinds}){extra}")
        if checker.errors:
            rows[-1] += f"; {len(checker.errors)} error{'' if len(checker.errors) == 1 else 's'}"
            failed += 1
        total += len(objects)
    print("summary:")
    for row in rows:
        print("  " + row)
    bad = failed + len(args.render_failed)
    count = len(renders) + len(args.render_failed)
    if bad:
        print(f"validate: FAILED: {bad} of {count} kustomizations have errors")
        return 1
    print(
        f"validate: OK: {count} kustomizations, {total} objects, valid against Kubernetes "
        f"{' and '.join(versions)} (strict) and the deployment checks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
