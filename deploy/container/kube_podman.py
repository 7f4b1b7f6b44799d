#!/usr/bin/env python3
"""kube_podman.py: deploy/k8s manifests as `podman kube play` (Podman 4.3, Debian 12) can run them.

deploy/container/run.sh plays the Kubernetes manifests under Podman with the locally built image. Podman 4.3
runs Deployments, Pods, PersistentVolumeClaims (as named volumes) and ConfigMaps (inline, as volumes), but
its Secret volumes are unusable for these manifests: a volume without `optional` crashes `kube play` (nil
pointer in VolumeFromSecret), `items` (the key-to-path layout the coordinator's federation directory needs)
and `defaultMode` are ignored, `data` is written still base64-encoded, `stringData` is dropped, and the
volume is created once per secret name and never refreshed. So this tool does for each Secret volume what
the kubelet does: it lays the Secret's keys out in a directory (items to their paths, defaultMode, group
fsGroup) and mounts that directory read-only (a hostPath volume) in its place. Podman 4.3 makes an emptyDir
a named volume called after the volume ("tmp"), one shared by every pod: each becomes a directory of its own
per pod here (mode 1777; on disk, where the manifests ask for memory). Everything else is passed through
unchanged; kinds Podman 4.3 does not play (Namespace, Service, NetworkPolicy) are left out and listed on
stderr, any other kind is refused. Without Services there is no cluster DNS: --host-alias gives every pod an
/etc/hosts entry (hostAliases) for a Service's name, pointing at the pod behind it. A claim that must hold
files before its pod starts (an institution's own data, bound in a cluster to storage that already holds
them) is a Podman volume the caller creates and fills beforehand (--filled-claim): `kube play` refuses a claim
whose volume exists ("volume already exists"), so its PersistentVolumeClaim document is left out and the pods
mount the existing volume by the claim's name.

Usage (python3 with PyYAML, Debian: python3-yaml):
  kube_podman.py --secret NAME=DIR [--secret ...] --volumes-out DIR [--host-alias HOST=IP ...]
                 [--filled-claim NAME ...] [--named-volumes FILE] MANIFEST... > play.yaml
    --secret NAME=DIR   the Secret NAME: one key per file in DIR (as `kubectl create secret generic NAME
                        --from-file=DIR/` makes it)
    --volumes-out DIR   where Secret and emptyDir volumes are laid out (DIR/SECRET/VOLUME-POD, DIR/POD/VOLUME)
    --named-volumes FILE  write the Podman volumes the play creates (claims, ConfigMaps), one per line:
                        `podman kube down` keeps them, and a second play refuses to start while they exist
    --host-alias HOST=IP  resolve HOST (e.g. a Service's NAME.NAMESPACE.svc) to IP in every pod
    --filled-claim NAME   the claim NAME is a Podman volume the caller made and filled: its PersistentVolumeClaim
                        is left out (it is still listed in --named-volumes, for the caller's cleanup)
Exit status: 0, or 2 with the reason on stderr (unknown kind, a Secret volume naming an unknown Secret or
an unknown key, a bad path, a --filled-claim no manifest declares or no pod mounts).
"""

import argparse
import os
import sys

import yaml

PLAYED = {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Pod"}
LEFT_OUT = {
    "Namespace": "Podman has no namespaces",
    "Service": "Podman 4.3 plays no Services (pods reach each other on the Podman network)",
    "NetworkPolicy": "not enforced by Podman; deploy/netns/run.sh is the isolation test",
}


class KubeError(Exception):
    """A manifest this tool cannot translate faithfully."""


def read_secret_dir(spec):
    name, sep, path = spec.partition("=")
    if not sep or not name or not os.path.isdir(path):
        raise KubeError(f"--secret {spec!r}: expected NAME=DIR with an existing DIR")
    data = {}
    for key in sorted(os.listdir(path)):
        full = os.path.join(path, key)
        if os.path.isfile(full):
            with open(full, "rb") as f:
                data[key] = f.read()
    return name, data


def safe_rel(path, what):
    norm = os.path.normpath(path)
    if os.path.isabs(path) or norm.startswith("..") or norm == ".":
        raise KubeError(f"{what}: path {path!r} leaves the volume")
    return norm


def lay_out(secret_name, data, source, pod_name, volume_name, fs_group, out_dir):
    """The Secret volume as the kubelet projects it: one file per item (or per key), mode defaultMode
    (item mode wins), group fsGroup; returns the directory."""
    dest = os.path.join(out_dir, secret_name, f"{volume_name}-{pod_name}")
    os.makedirs(dest, exist_ok=True)
    default_mode = int(source.get("defaultMode", 0o644))
    items = source.get("items")
    pairs = [(i["key"], i["path"], int(i.get("mode", default_mode))) for i in items] if items else \
        [(k, k, default_mode) for k in data]
    for key, path, mode in pairs:
        if key not in data:
            raise KubeError(f"pod {pod_name}: volume {volume_name}: Secret {secret_name} has no key {key}")
        target = os.path.join(dest, safe_rel(path, f"pod {pod_name}: volume {volume_name}"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data[key])
        os.chmod(target, mode)
        give_group(target, fs_group)
    for root, dirs, _ in os.walk(dest):
        for d in dirs + ["."]:
            p = os.path.normpath(os.path.join(root, d))
            os.chmod(p, 0o755)
            give_group(p, fs_group)
    return dest


def give_group(path, gid):
    if gid is None:
        return
    try:
        os.chown(path, -1, gid)
    except OSError as e:
        raise KubeError(f"cannot give {path} to group {gid} (fsGroup; run as root): {e}") from e


def pod_spec(doc):
    kind = doc["kind"]
    if kind == "Pod":
        return doc["metadata"]["name"], doc["spec"]
    return doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def host_aliases(specs):
    """--host-alias HOST=IP values as a pod's hostAliases (one entry per IP)."""
    by_ip = {}
    for spec in specs:
        host, sep, ip = spec.partition("=")
        if not sep or not host or not ip:
            raise KubeError(f"--host-alias {spec!r}: expected HOST=IP")
        by_ip.setdefault(ip, []).append(host)
    return [{"ip": ip, "hostnames": hosts} for ip, hosts in by_ip.items()]


def translate(docs, secrets, out_dir, notes, aliases=(), named=None, filled=()):
    out = []
    named = set() if named is None else named
    filled = set(filled)
    declared, mounted = set(), set()
    for doc in docs:
        if doc is None:
            continue
        kind = doc.get("kind")
        name = (doc.get("metadata") or {}).get("name", "?")
        if kind in LEFT_OUT:
            notes.append(f"left out {kind} {name}: {LEFT_OUT[kind]}")
            continue
        if kind not in PLAYED:
            raise KubeError(f"{kind} {name}: not a kind this tool knows how Podman plays")
        if kind == "PersistentVolumeClaim" and name in filled:
            declared.add(name)
            named.add(name)
            notes.append(f"left out PersistentVolumeClaim {name}: its volume was made and filled beforehand")
            continue
        if kind in ("Deployment", "Pod"):
            pod_name, spec = pod_spec(doc)
            fs_group = (spec.get("securityContext") or {}).get("fsGroup")
            if aliases:
                spec["hostAliases"] = (spec.get("hostAliases") or []) + list(aliases)
            for vol in spec.get("volumes") or []:
                if "persistentVolumeClaim" in vol:
                    named.add(vol["persistentVolumeClaim"]["claimName"])
                    mounted.add(vol["persistentVolumeClaim"]["claimName"])
                if "configMap" in vol:
                    named.add(vol["configMap"]["name"])
                if "emptyDir" in vol:
                    path = os.path.join(out_dir, pod_name, vol["name"])
                    os.makedirs(path, exist_ok=True)
                    os.chmod(path, 0o1777)
                    del vol["emptyDir"]
                    vol["hostPath"] = {"path": path, "type": "Directory"}
                    notes.append(f"{kind} {name}: emptyDir {vol['name']} at {path}")
                src = vol.get("secret")
                if src is None:
                    continue
                secret_name = src.get("secretName")
                if secret_name not in secrets:
                    raise KubeError(f"{kind} {name}: volume {vol['name']}: no --secret {secret_name}")
                path = lay_out(secret_name, secrets[secret_name], src, pod_name, vol["name"], fs_group, out_dir)
                del vol["secret"]
                vol["hostPath"] = {"path": path, "type": "Directory"}
                notes.append(f"{kind} {name}: Secret {secret_name} laid out at {path}")
        out.append(doc)
    for claim in sorted(filled - declared):
        raise KubeError(f"--filled-claim {claim}: no PersistentVolumeClaim of that name in the manifests")
    for claim in sorted(filled - mounted):
        raise KubeError(f"--filled-claim {claim}: no pod mounts it")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--secret", action="append", default=[])
    p.add_argument("--volumes-out", required=True)
    p.add_argument("--named-volumes")
    p.add_argument("--host-alias", action="append", default=[])
    p.add_argument("--filled-claim", action="append", default=[])
    p.add_argument("manifests", nargs="+")
    args = p.parse_args(argv)
    try:
        secrets = dict(read_secret_dir(s) for s in args.secret)
        docs = []
        for m in args.manifests:
            with open(m, encoding="utf-8") as f:
                docs += list(yaml.safe_load_all(f))
        notes = []
        named = set()
        out = translate(docs, secrets, os.path.abspath(args.volumes_out), notes, host_aliases(args.host_alias),
                        named, args.filled_claim)
        if args.named_volumes:
            with open(args.named_volumes, "w", encoding="utf-8") as f:
                f.write("".join(f"{v}\n" for v in sorted(named)))
        yaml.safe_dump_all(out, sys.stdout, sort_keys=False)
        for n in notes:
            print(f"kube_podman.py: {n}", file=sys.stderr)
    except (KubeError, OSError, KeyError, yaml.YAMLError) as e:
        print(f"kube_podman.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
