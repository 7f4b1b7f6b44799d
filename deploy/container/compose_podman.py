#!/usr/bin/env python3
"""compose_podman.py: the `podman` command lines a compose file asks for, for engines without a compose tool.

deploy/container/run.sh runs deploy/compose/compose.yaml through this, so the file users run with
`docker compose up` is the file CI runs: every container setting (read-only root, user, capabilities,
security options, tmpfs, environment, restart policy, command, published ports, bind mounts, health check,
networks, start order) comes from the compose file. A key this translator does not know is refused, never
skipped, so a setting added to the compose file cannot silently go untested. `build:` is checked but not
acted on: the image is built beforehand (deploy/container/build.sh).

Usage (python3 with PyYAML, Debian: python3-yaml):
  compose_podman.py COMPOSE_FILE --project NAME services          service names in start order (depends_on)
  compose_podman.py COMPOSE_FILE --project NAME networks          networks to create, one per line
  compose_podman.py COMPOSE_FILE --project NAME run SERVICE       `podman run` arguments, NUL-separated
  compose_podman.py COMPOSE_FILE --project NAME show SERVICE      the same, as one shell-quoted line

Containers are named PROJECT-SERVICE-1 (as `docker compose` v2 names them) and labelled with the project
and service (com.docker.compose.*); networks are named PROJECT_NETWORK and every container joins its
networks under its service name as an alias, so services find each other by name, as under compose. Relative
bind-mount sources resolve against the compose file's directory. Exit status: 0, or 2 with the reason on
stderr for an unknown key, an unsupported value or an unknown service.
"""

import argparse
import json
import os
import shlex
import sys

import yaml

# Keys of a service this translator turns into podman arguments (or checks, for `build`).
SERVICE_KEYS = {
    "image", "build", "read_only", "user", "cap_drop", "security_opt", "tmpfs", "environment", "restart",
    "command", "ports", "volumes", "healthcheck", "networks", "depends_on",
}
TOP_KEYS = {"services", "networks", "name", "version"}
HEALTH_KEYS = {"test", "interval", "timeout", "retries", "start_period"}
RESTART = {"no", "always", "on-failure", "unless-stopped"}


class ComposeError(Exception):
    """A compose file this translator cannot run faithfully."""


def load(path):
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)  # resolves anchors and `<<` merge keys
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise ComposeError(f"{path}: no services mapping")
    unknown = set(doc) - TOP_KEYS - {k for k in doc if str(k).startswith("x-")}
    if unknown:
        raise ComposeError(f"{path}: unsupported top-level keys {sorted(unknown)}")
    for name, svc in doc["services"].items():
        if not isinstance(svc, dict):
            raise ComposeError(f"service {name}: not a mapping")
        unknown = set(svc) - SERVICE_KEYS
        if unknown:
            raise ComposeError(f"service {name}: unsupported keys {sorted(unknown)}")
    return doc


def as_list(value, what):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise ComposeError(f"{what}: expected a string or a list, got {value!r}")


def depends(svc):
    """Services this one starts after. Only start order is honoured: a long-form condition that waits for
    more (service_healthy, service_completed_successfully) is refused rather than ignored."""
    d = svc.get("depends_on") or []
    if isinstance(d, dict):
        for dep, cfg in d.items():
            cond = (cfg or {}).get("condition", "service_started")
            if cond != "service_started":
                raise ComposeError(f"depends_on {dep}: condition {cond} is not supported")
        return list(d)
    return as_list(d, "depends_on")


def start_order(doc):
    """Services so that each comes after everything it depends on (file order otherwise)."""
    services = doc["services"]
    order, state = [], {}

    def visit(name, chain):
        if name not in services:
            raise ComposeError(f"{chain[-1]} depends on unknown service {name}")
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ComposeError(f"dependency cycle: {' -> '.join(chain + [name])}")
        state[name] = "visiting"
        for dep in depends(services[name]):
            visit(dep, chain + [name])
        state[name] = "done"
        order.append(name)

    for name in services:
        visit(name, [name])
    return order


def service_networks(svc):
    n = svc.get("networks")
    if n is None:
        return ["default"]
    return list(n) if isinstance(n, (list, dict)) else as_list(n, "networks")


def networks(doc, project):
    names = []
    for name in start_order(doc):
        for net in service_networks(doc["services"][name]):
            if net not in names:
                names.append(net)
    declared = doc.get("networks") or {}
    for net in names:
        if net != "default" and net not in declared:
            raise ComposeError(f"network {net} is used but not declared")
        cfg = declared.get(net) or {}
        if cfg:
            raise ComposeError(f"network {net}: options {sorted(cfg)} are not supported")
    return [f"{project}_{net}" for net in names]


def duration(value, what):
    """A compose duration (10s, 1m30s, 500ms) in podman's syntax (Go durations: the same units)."""
    text = str(value)
    if not text or not all(c.isdigit() or c in "hms." for c in text) or not text[0].isdigit():
        raise ComposeError(f"{what}: bad duration {value!r}")
    return text


def volume(spec, base, what):
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ComposeError(f"{what}: volume {spec!r}: expected SOURCE:TARGET[:MODE]")
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else ""
    if mode not in ("", "ro", "rw"):
        raise ComposeError(f"{what}: volume {spec!r}: mode {mode!r} is not supported")
    if src.startswith(("./", "../")) or src in (".", ".."):
        src = os.path.normpath(os.path.join(base, src))
    elif not src.startswith("/"):
        raise ComposeError(f"{what}: volume {spec!r}: named volumes are not supported (bind mounts only)")
    if not dst.startswith("/"):
        raise ComposeError(f"{what}: volume {spec!r}: target must be absolute")
    return f"{src}:{dst}" + (f":{mode}" if mode else "")


def run_args(doc, project, name, base):
    services = doc["services"]
    if name not in services:
        raise ComposeError(f"unknown service {name} (known: {', '.join(services)})")
    svc = services[name]
    what = f"service {name}"
    if "image" not in svc:
        raise ComposeError(f"{what}: no image (this translator does not build; see build.sh)")
    build = svc.get("build")
    if build is not None and not isinstance(build, (str, dict)):
        raise ComposeError(f"{what}: build: expected a path or a mapping")
    a = ["--detach", "--name", f"{project}-{name}-1",
         "--label", f"com.docker.compose.project={project}",
         "--label", f"com.docker.compose.service={name}"]
    if svc.get("read_only"):
        a.append("--read-only")
    if "user" in svc:
        a += ["--user", str(svc["user"])]
    for cap in as_list(svc.get("cap_drop"), f"{what}: cap_drop"):
        a += ["--cap-drop", cap]
    for opt in as_list(svc.get("security_opt"), f"{what}: security_opt"):
        a += ["--security-opt", opt]
    for t in as_list(svc.get("tmpfs"), f"{what}: tmpfs"):
        a += ["--tmpfs", t]
    env = svc.get("environment") or {}
    items = [f"{k}={'' if v is None else v}" for k, v in env.items()] if isinstance(env, dict) \
        else as_list(env, f"{what}: environment")
    for e in items:
        a += ["--env", e]
    if "restart" in svc:
        policy = str(svc["restart"])
        if policy.split(":")[0] not in RESTART:
            raise ComposeError(f"{what}: restart {policy!r}")
        a += ["--restart", policy]
    for p in as_list(svc.get("ports"), f"{what}: ports"):
        a += ["--publish", p]
    for v in as_list(svc.get("volumes"), f"{what}: volumes"):
        a += ["--volume", volume(v, base, what)]
    hc = svc.get("healthcheck")
    if hc is not None:
        unknown = set(hc) - HEALTH_KEYS
        if unknown:
            raise ComposeError(f"{what}: healthcheck: unsupported keys {sorted(unknown)}")
        test = hc.get("test")
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        if not isinstance(test, list) or not test or test[0] not in ("CMD", "CMD-SHELL"):
            raise ComposeError(f"{what}: healthcheck test must be [CMD, ...], [CMD-SHELL, ...] or a string")
        # Podman's --health-cmd takes a JSON array of the command's words, or a string for the shell. An array
        # starting with "CMD" is split on blanks by Podman 4.3 (words with spaces break), so the words go
        # without it; Podman prepends CMD itself.
        if test[0] == "CMD":
            if len(test) < 3:
                raise ComposeError(f"{what}: healthcheck [CMD, ...] needs a program and at least one argument")
            a += ["--health-cmd", json.dumps(test[1:])]
        else:
            a += ["--health-cmd", " ".join(test[1:])]
        for key, flag in (("interval", "--health-interval"), ("timeout", "--health-timeout"),
                          ("start_period", "--health-start-period")):
            if key in hc:
                a += [flag, duration(hc[key], f"{what}: healthcheck {key}")]
        if "retries" in hc:
            a += ["--health-retries", str(int(hc["retries"]))]
    nets = service_networks(svc)
    if len(nets) != 1:
        raise ComposeError(f"{what}: exactly one network is supported, got {nets}")
    a += ["--network", f"{project}_{nets[0]}", "--network-alias", name]
    a.append(str(svc["image"]))
    cmd = svc.get("command")
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    a += [str(c) for c in (cmd or [])]
    return a


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("compose_file")
    p.add_argument("--project", required=True)
    p.add_argument("action", choices=["services", "networks", "run", "show"])
    p.add_argument("service", nargs="?")
    args = p.parse_args(argv)
    try:
        doc = load(args.compose_file)
        base = os.path.dirname(os.path.abspath(args.compose_file))
        if args.action == "services":
            print("\n".join(start_order(doc)))
        elif args.action == "networks":
            print("\n".join(networks(doc, args.project)))
        else:
            if not args.service:
                raise ComposeError(f"{args.action}: which service?")
            words = run_args(doc, args.project, args.service, base)
            if args.action == "run":
                sys.stdout.write("".join(w + "\0" for w in words))
            else:
                print("podman run " + shlex.join(words))
    except (ComposeError, OSError, yaml.YAMLError) as e:
        print(f"compose_podman.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
