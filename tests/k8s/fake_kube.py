"""A recording fake of the two ``kubernetes`` client API objects that ``lib.k8s_apply`` uses
(AppsV1Api, CoreV1Api).  Not a cluster: it stores what it is sent, records every call, raises the
client's own ApiException(404) for missing objects, and reports rollout status the way the API
server does for a rollout that completes, stalls past its progress deadline, or never becomes ready."""

import copy

from kubernetes.client.rest import ApiException


class FakeApps:
    def __init__(self, rollout: str = "ok"):
        self.rollout = rollout  # "ok" | "deadline" | "stuck"
        self.calls: list[tuple] = []
        self.objects: dict[tuple[str, str], dict] = {}

    def _missing(self, name):
        return ApiException(status=404, reason=f"deployments.apps {name!r} not found")

    def read_namespaced_deployment(self, name, namespace):
        self.calls.append(("read", name))
        if (namespace, name) not in self.objects:
            raise self._missing(name)
        return copy.deepcopy(self.objects[(namespace, name)])

    def create_namespaced_deployment(self, namespace, body):
        self.calls.append(("create", body["metadata"]["name"]))
        obj = copy.deepcopy(body)
        obj["metadata"].update(generation=1, annotations={**obj["metadata"].get("annotations", {}),
                                                          "deployment.kubernetes.io/revision": "1"})
        self.objects[(namespace, body["metadata"]["name"])] = obj
        return obj

    def patch_namespaced_deployment(self, name, namespace, body):
        self.calls.append(("patch", name, body["spec"]["template"]["metadata"]["labels"].get("mlops/model-version")))
        obj = self.objects[(namespace, name)]
        old_template = obj["spec"]["template"]
        obj["spec"].update(copy.deepcopy(body["spec"]))
        obj["metadata"].setdefault("labels", {}).update(body["metadata"].get("labels", {}))
        obj["metadata"]["generation"] += 1
        if obj["spec"]["template"] != old_template:
            ann = obj["metadata"]["annotations"]
            ann["deployment.kubernetes.io/revision"] = str(int(ann["deployment.kubernetes.io/revision"]) + 1)
        return obj

    def read_namespaced_deployment_status(self, name, namespace):
        self.calls.append(("status", name))
        obj = copy.deepcopy(self.objects[(namespace, name)])
        want = obj["spec"].get("replicas", 1)
        gen = obj["metadata"]["generation"]
        first = gen == 1
        if self.rollout == "ok" or first:
            obj["status"] = {"observed_generation": gen, "replicas": want, "updated_replicas": want,
                             "available_replicas": want}
        elif self.rollout == "deadline":
            obj["status"] = {"observed_generation": gen, "replicas": want + 1, "updated_replicas": 1,
                             "available_replicas": want,
                             "conditions": [{"type": "Progressing", "status": "False",
                                             "reason": "ProgressDeadlineExceeded",
                                             "message": 'ReplicaSet "flight-delay-serving-2" has timed out progressing.'}]}
        else:  # stuck: new pod never ready, old ones keep serving
            obj["status"] = {"observed_generation": gen, "replicas": want + 1, "updated_replicas": 1,
                             "available_replicas": want}
        return obj


class FakeCore:
    def __init__(self):
        self.calls: list[tuple] = []
        self.objects: dict[tuple[str, str], dict] = {}

    def read_namespaced_service(self, name, namespace):
        self.calls.append(("read", name))
        if (namespace, name) not in self.objects:
            raise ApiException(status=404, reason="not found")
        return self.objects[(namespace, name)]

    def create_namespaced_service(self, namespace, body):
        self.calls.append(("create", body["metadata"]["name"]))
        self.objects[(namespace, body["metadata"]["name"])] = copy.deepcopy(body)

    def patch_namespaced_service(self, name, namespace, body):
        self.calls.append(("patch", name))
        self.objects[(namespace, name)] = copy.deepcopy(body)
