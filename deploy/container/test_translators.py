#!/usr/bin/env python3
"""test_translators.py: tests of compose_podman.py and kube_podman.py (python3 -m unittest
deploy/container/test_translators.py; needs PyYAML).

Both tools decide what the container tests run, so each is checked on the repository's own files (the
arguments the compose file yields, the Secret layout the coordinator needs) and on bad input: a key or kind
they do not know must be refused, never skipped. Run by deploy/container/run.sh before it builds anything;
each test takes milliseconds and needs no container engine. (kube_podman.py gives Secret files to the pod's
fsGroup, which needs root; elsewhere the tests record the chown calls instead of making them.)
"""

import io
import os
import stat
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compose_podman  # noqa: E402
import kube_podman  # noqa: E402
import yaml  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE = os.path.join(ROOT, "deploy", "compose", "compose.yaml")
K8S = os.path.join(ROOT, "deploy", "k8s")


def compose_doc(text):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        return compose_podman.load(f.name)
    finally:
        os.unlink(f.name)


def can_chown_to(gid):
    with tempfile.NamedTemporaryFile() as f:
        try:
            os.chown(f.name, -1, gid)
            return True
        except OSError:
            return False


def flag_values(args, flag):
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


class ComposeOnTheRepositoryFile(unittest.TestCase):
    def setUp(self):
        self.doc = compose_podman.load(COMPOSE)
        self.base = os.path.dirname(COMPOSE)

    def test_services_start_after_their_dependencies(self):
        self.assertEqual(compose_podman.start_order(self.doc), ["coordinator", "p0", "p1", "p2"])
        self.assertEqual(compose_podman.networks(self.doc, "t"), ["t_federation"])

    def test_every_hardening_setting_reaches_podman(self):
        for name in ["coordinator", "p0", "p1", "p2"]:
            a = compose_podman.run_args(self.doc, "t", name, self.base)
            self.assertIn("--read-only", a)
            self.assertEqual(flag_values(a, "--user"), ["10001:10001"])
            self.assertEqual(flag_values(a, "--cap-drop"), ["ALL"])
            self.assertEqual(flag_values(a, "--security-opt"), ["no-new-privileges:true"])
            self.assertEqual(flag_values(a, "--tmpfs"), ["/tmp:size=64m,mode=1777"])
            self.assertEqual(flag_values(a, "--restart"), ["on-failure"])
            self.assertEqual(flag_values(a, "--network"), ["t_federation"])
            self.assertEqual(flag_values(a, "--network-alias"), [name])
            self.assertEqual(flag_values(a, "--name"), [f"t-{name}-1"])
            image = a.index("fedistill:0.1.0")
            self.assertEqual(a[image + 1], "coordinator" if name == "coordinator" else "participant")
            # Relative bind mounts resolve against the compose file's directory.
            for v in flag_values(a, "--volume"):
                self.assertTrue(v.startswith(self.base + "/"), v)

    def test_each_node_mounts_only_its_own_data_read_only(self):
        def data_mounts(name):
            a = compose_podman.run_args(self.doc, "t", name, self.base)
            return [v for v in flag_values(a, "--volume") if v.split(":")[1].startswith("/data")]
        d = os.path.join(self.base, "data")
        self.assertEqual(data_mounts("coordinator"), [
            f"{d}/task.toml:/data/task.toml:ro",
            f"{d}/public-images.idx3-ubyte:/data/public-images.idx3-ubyte:ro",
        ])
        for i in range(3):
            self.assertEqual(data_mounts(f"p{i}"), [f"{d}/nodes/p{i}:/data:ro"])

    def test_only_the_coordinator_publishes_and_has_a_health_check(self):
        a = compose_podman.run_args(self.doc, "t", "coordinator", self.base)
        self.assertEqual(flag_values(a, "--publish"), ["4433:4433/udp", "127.0.0.1:9100:9100/tcp"])
        cmd = yaml.safe_load(flag_values(a, "--health-cmd")[0])
        self.assertEqual(cmd[:2], ["bash", "-c"])  # the array without "CMD" (Podman 4.3 splits that on blanks)
        self.assertIn("/healthz", cmd[2])
        p = compose_podman.run_args(self.doc, "t", "p2", self.base)
        self.assertEqual(flag_values(p, "--publish"), [])
        self.assertEqual(flag_values(p, "--health-cmd"), [])


class ComposeRefusesWhatItCannotRun(unittest.TestCase):
    SERVICE = "services:\n  a:\n    image: x\n"

    def refused(self, text, needle, service="a"):
        with self.assertRaises(compose_podman.ComposeError) as e:
            doc = compose_doc(text)
            compose_podman.start_order(doc)
            compose_podman.networks(doc, "t")
            compose_podman.run_args(doc, "t", service, "/base")
        self.assertIn(needle, str(e.exception))

    def test_unknown_service_key(self):
        self.refused(self.SERVICE + "    privileged: true\n", "privileged")

    def test_unknown_top_level_key(self):
        self.refused(self.SERVICE + "volumes:\n  v: {}\n", "volumes")

    def test_named_volume(self):
        self.refused(self.SERVICE + "    volumes: [data:/data]\n", "named volumes")

    def test_volume_mode(self):
        self.refused(self.SERVICE + "    volumes: [./a:/a:z]\n", "mode")

    def test_health_condition(self):
        text = "services:\n  a:\n    image: x\n    depends_on: {b: {condition: service_healthy}}\n  b:\n    image: x\n"
        self.refused(text, "service_healthy")

    def test_dependency_cycle_and_unknown_dependency(self):
        self.refused("services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n", "cycle")
        self.refused("services:\n  a: {image: x, depends_on: [c]}\n", "unknown service c")

    def test_undeclared_network_and_network_options(self):
        self.refused(self.SERVICE + "    networks: [n]\n", "not declared")
        self.refused(self.SERVICE + "    networks: [n]\nnetworks:\n  n: {driver: macvlan}\n", "not supported")

    def test_unknown_restart_policy_and_service(self):
        self.refused(self.SERVICE + "    restart: sometimes\n", "restart")
        self.refused(self.SERVICE, "unknown service b", service="b")

    def test_cli_reports_the_reason_and_exits_2(self):
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            rc = compose_podman.main([COMPOSE, "--project", "t", "run", "nosuch"])
        self.assertEqual(rc, 2)
        self.assertIn("unknown service nosuch", err.getvalue())


class KubeSecretsAndVolumes(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = os.path.join(self.tmp.name, "out")
        with open(os.path.join(K8S, "coordinator.yaml"), encoding="utf-8") as f:
            self.coordinator = list(yaml.safe_load_all(f))
        items = [d for d in self.coordinator if d.get("kind") == "Deployment"][0]
        vol = [v for v in items["spec"]["template"]["spec"]["volumes"] if v["name"] == "federation"][0]
        self.keys = {i["key"]: i["path"] for i in vol["secret"]["items"]}
        self.secrets = {"fedistill-federation": {k: f"content of {k}\n".encode() for k in self.keys}}
        self.chowned = {}
        if not can_chown_to(10001):
            patcher = mock.patch.object(kube_podman.os, "chown", lambda p, u, g: self.chowned.__setitem__(p, g))
            patcher.start()
            self.addCleanup(patcher.stop)

    def tearDown(self):
        self.tmp.cleanup()

    def group_of(self, path):
        return self.chowned[path] if path in self.chowned else os.stat(path).st_gid

    def translate(self, docs, secrets=None, aliases=(), filled=()):
        notes, named = [], set()
        out = kube_podman.translate(docs, self.secrets if secrets is None else secrets, self.out, notes,
                                    kube_podman.host_aliases(aliases), named, filled)
        return out, notes, named

    def test_the_coordinator_secret_is_laid_out_as_its_items_say(self):
        out, notes, named = self.translate(self.coordinator)
        kinds = [d["kind"] for d in out]
        self.assertEqual(kinds, ["ConfigMap", "PersistentVolumeClaim", "PersistentVolumeClaim", "Deployment"])
        self.assertEqual(sum("left out Service" in n for n in notes), 2)
        self.assertEqual(named, {"fedistill-coordinator-config", "fedistill-coordinator-data",
                                 "fedistill-coordinator-store"})
        spec = [d for d in out if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]
        fed = [v for v in spec["volumes"] if v["name"] == "federation"][0]
        self.assertNotIn("secret", fed)
        root = fed["hostPath"]["path"]
        self.assertIn("ca/ca.crt.pem", self.keys.values())
        for key, path in self.keys.items():
            full = os.path.join(root, path)
            with open(full, "rb") as f:
                self.assertEqual(f.read(), f"content of {key}\n".encode())
            self.assertEqual(stat.S_IMODE(os.stat(full).st_mode), 0o440, path)
            self.assertEqual(self.group_of(full), 10001, path)
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"][0]
        self.assertNotIn("emptyDir", tmp)
        self.assertEqual(stat.S_IMODE(os.stat(tmp["hostPath"]["path"]).st_mode), 0o1777)

    def test_host_aliases_reach_every_pod(self):
        with open(os.path.join(K8S, "participants.yaml"), encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        secrets = {f"fedistill-kit-p{i}": {"participant.toml": b"x"} for i in range(3)}
        out, _, named = self.translate(docs, secrets, ["fedistill-coordinator.fedistill.svc=10.0.0.5"])
        pods = [d["spec"]["template"]["spec"] for d in out if d["kind"] == "Deployment"]
        self.assertEqual(len(pods), 3)
        for spec in pods:
            self.assertEqual(spec["hostAliases"], [{"ip": "10.0.0.5", "hostnames": ["fedistill-coordinator.fedistill.svc"]}])
        self.assertEqual(len(named), 9)  # a ConfigMap, a data claim and a work claim per participant

    def test_a_filled_claim_is_left_out_and_its_volume_mounted_by_name(self):
        data = "fedistill-coordinator-data"
        out, notes, named = self.translate(self.coordinator, filled=[data])
        self.assertEqual([d["kind"] for d in out], ["ConfigMap", "PersistentVolumeClaim", "Deployment"])
        self.assertEqual(out[1]["metadata"]["name"], "fedistill-coordinator-store")
        self.assertIn(data, named)  # still the caller's to remove
        self.assertTrue(any(data in n and "filled beforehand" in n for n in notes), notes)
        spec = out[2]["spec"]["template"]["spec"]
        vol = [v for v in spec["volumes"] if v["name"] == "data"][0]
        self.assertEqual(vol["persistentVolumeClaim"]["claimName"], data)
        mount = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "data"][0]
        self.assertEqual((mount["mountPath"], mount["readOnly"]), ("/data", True))

    def test_a_filled_claim_nothing_declares_or_mounts_is_refused(self):
        with self.assertRaisesRegex(kube_podman.KubeError, "no PersistentVolumeClaim of that name"):
            self.translate(self.coordinator, filled=["fedistill-nosuch-data"])
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "lonely"}}
        with self.assertRaisesRegex(kube_podman.KubeError, "no pod mounts it"):
            self.translate([claim], filled=["lonely"])

    def test_a_missing_secret_or_key_is_refused(self):
        with self.assertRaisesRegex(kube_podman.KubeError, "no --secret fedistill-federation"):
            self.translate(self.coordinator, secrets={})
        partial = {"fedistill-federation": {"roster.toml": b"x"}}
        with self.assertRaisesRegex(kube_podman.KubeError, "has no key"):
            self.translate(self.coordinator, secrets=partial)

    def test_an_item_path_leaving_the_volume_is_refused(self):
        doc = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"volumes": [
            {"name": "s", "secret": {"secretName": "s", "items": [{"key": "k", "path": "../../etc/x"}]}}]}}
        with self.assertRaisesRegex(kube_podman.KubeError, "leaves the volume"):
            self.translate([doc], secrets={"s": {"k": b"x"}})

    def test_an_unknown_kind_and_a_bad_alias_are_refused(self):
        with self.assertRaisesRegex(kube_podman.KubeError, "StatefulSet"):
            self.translate([{"kind": "StatefulSet", "metadata": {"name": "x"}}])
        with self.assertRaisesRegex(kube_podman.KubeError, "HOST=IP"):
            kube_podman.host_aliases(["no-address"])

    def test_network_policies_are_left_out_and_said_so(self):
        with open(os.path.join(K8S, "networkpolicy.yaml"), encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        out, notes, _ = self.translate(docs)
        self.assertEqual(out, [])
        self.assertEqual(len(notes), 2)
        self.assertTrue(all("not enforced by Podman" in n for n in notes))


if __name__ == "__main__":
    unittest.main()
