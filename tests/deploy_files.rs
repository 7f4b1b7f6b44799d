// Over 800 lines: one test per kind of deploy file plus the command-line checker they share; split apart they would repeat the parsing and mount-resolution helpers.
//! The deployment kit cannot rot silently: every file under deploy/ parses (TOML through the real
//! coordinator and participant config parsers, YAML with yaml-rust2, the Containerfile and systemd units
//! line by line), the settings the files repeat agree with each other (ports, paths, each node's `/data`),
//! every template runs on the deployment path (a task card and each institution's own files, read through
//! the mounts the compose file and the manifests give each node, on the files `fedistill data split`
//! writes; never a catalog `shard` + `[data]`), and every `fedistill ...` command line and flag written in
//! deploy/ or docs/operations.md exists in the real binary's `--help`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use fedistill_coordinator::config::{CoordinatorSettings, TaskFiles, TaskSource};
use fedistill_participant::config::{DataSource, OwnData, ParticipantSettings};
use yaml_rust2::{Yaml, YamlLoader};

const EXE: &str = env!("CARGO_BIN_EXE_fedistill");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Every file under deploy/, relative to the repository root, sorted.
fn deploy_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&root().join("deploy"), &mut v);
    let mut rel: Vec<String> = v
        .iter()
        .map(|p| p.strip_prefix(root()).expect("under root").display().to_string())
        .collect();
    rel.sort();
    rel
}

fn coordinator(text: &str, what: &str) -> CoordinatorSettings {
    CoordinatorSettings::parse(text, Path::new("/cfg")).unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

fn participant(text: &str, what: &str) -> ParticipantSettings {
    ParticipantSettings::parse(text, Path::new("/cfg")).unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

// ---- TOML -------------------------------------------------------------------------------------------

/// The own files a participant config names (every deploy template runs on the deployment path: a task card
/// and the institution's own files, never a catalog shard).
fn own_of(p: &ParticipantSettings, what: &str) -> OwnData {
    match &p.source {
        DataSource::Own(own) => own.clone(),
        other => panic!("{what}: a deploy template must name its own files ([task] and [private]), got {other:?}"),
    }
}

/// The task card and public file a coordinator config names.
fn task_of(c: &CoordinatorSettings, what: &str) -> TaskFiles {
    match &c.task {
        TaskSource::Card(t) => t.clone(),
        other => panic!("{what}: a deploy template must run from a task card ([task]), got {other:?}"),
    }
}

/// Every file a participant's own-data config reads lies in its read-only `/data`, and it fetches the public
/// set from the coordinator (no `[public] path`).
fn assert_participant_reads_its_data(p: &ParticipantSettings, what: &str) {
    let own = own_of(p, what);
    assert_eq!(own.card, Path::new("/data/task.toml"), "{what}");
    assert!(own.private.starts_with("/data"), "{what}: {:?}", own.private);
    let benchmark = own
        .benchmark
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: [benchmark]"));
    assert!(benchmark.starts_with("/data"), "{what}: {benchmark:?}");
    assert_eq!(
        own.public, None,
        "{what}: the public set is fetched from the coordinator"
    );
    assert!(p.workdir.starts_with("/work"), "{what}: {:?}", p.workdir);
}

fn assert_coordinator_reads_its_data(c: &CoordinatorSettings, what: &str) {
    let t = task_of(c, what);
    assert_eq!(t.card, Path::new("/data/task.toml"), "{what}");
    assert!(t.public.starts_with("/data"), "{what}: {:?}", t.public);
}

#[test]
fn example_configs_parse_with_the_real_parsers_and_match_the_container_layout() {
    let c = coordinator(
        &read("deploy/examples/coordinator.toml"),
        "deploy/examples/coordinator.toml",
    );
    assert_eq!(c.federation_dir, Path::new("/kits/federation"));
    assert_eq!(c.store, Path::new("/work/coordinator.sqlite"));
    assert_eq!(c.bind.port(), 4433);
    assert_eq!(c.status.map(|s| s.port()), Some(9100));
    assert_coordinator_reads_its_data(&c, "deploy/examples/coordinator.toml");
    let p = participant(
        &read("deploy/examples/participant.toml"),
        "deploy/examples/participant.toml",
    );
    assert_eq!(p.kit, Path::new("/kits/kit"));
    assert_participant_reads_its_data(&p, "deploy/examples/participant.toml");
    assert!(p.teacher.is_some() && p.student.is_some() && p.train.is_some() && p.distill.is_some());
}

#[test]
fn compose_configs_parse_and_agree() {
    let c = coordinator(
        &read("deploy/compose/config/coordinator.toml"),
        "compose coordinator.toml",
    );
    assert_coordinator_reads_its_data(&c, "compose coordinator.toml");
    let mut configs = BTreeSet::new();
    for i in 0..3 {
        let rel = format!("deploy/compose/config/p{i}.toml");
        let text = read(&rel);
        let p = participant(&text, &rel);
        assert_participant_reads_its_data(&p, &rel);
        // Each participant's files differ by the directory mounted at /data, not by its config.
        configs.insert(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    assert_eq!(configs.len(), 1, "the participants' configs differ only in comments");
}

/// The parsers are strict: a key misspelt in a deploy file would fail (so the tests above can fail).
#[test]
fn a_misspelt_key_in_an_example_is_refused() {
    let text = read("deploy/examples/coordinator.toml").replace("collect_timeout_ms", "collect_timeout");
    let err = format!(
        "{:#}",
        CoordinatorSettings::parse(&text, Path::new("/")).expect_err("refused")
    );
    assert!(err.contains("collect_timeout"), "{err}");
    let text = read("deploy/examples/participant.toml").replace("workdir", "work_dir");
    let err = format!(
        "{:#}",
        ParticipantSettings::parse(&text, Path::new("/")).expect_err("refused")
    );
    assert!(err.contains("work_dir"), "{err}");
}

/// A node's view of its files: container paths under a mount target map to host paths under its source.
struct Mounts(Vec<(PathBuf, PathBuf)>);

impl Mounts {
    /// The host path of `inside` (a path in the container), through the deepest mount that holds it.
    fn host(&self, inside: &Path, what: &str) -> PathBuf {
        let (target, source) = self
            .0
            .iter()
            .filter(|(t, _)| inside.starts_with(t))
            .max_by_key(|(t, _)| t.components().count())
            .unwrap_or_else(|| panic!("{what}: nothing is mounted where {} is", inside.display()));
        let rest = inside.strip_prefix(target).expect("under the mount");
        if rest.as_os_str().is_empty() {
            source.clone()
        } else {
            source.join(rest)
        }
    }
}

/// The `fedistill data split` line in a deploy file's comments (the rehearsal's data), run with its own
/// flags into `out` (its `--out DIR` replaced), returning the DIR it names.
fn run_data_split(rel: &str, out: &Path) -> String {
    let text = read(rel);
    let (_, words) = invocations(&text, false)
        .into_iter()
        .find(|(_, w)| w.first().map(String::as_str) == Some("data") && w.get(1).map(String::as_str) == Some("split"))
        .unwrap_or_else(|| panic!("{rel}: no `fedistill data split` line"));
    let at = words
        .iter()
        .position(|w| w == "--out")
        .unwrap_or_else(|| panic!("{rel}: `fedistill data split` without --out"));
    let named = words.get(at + 1).cloned().unwrap_or_else(|| panic!("{rel}: --out DIR"));
    let mut args = words.clone();
    args[at + 1] = out.display().to_string();
    let o = Command::new(EXE)
        .args(&args)
        .output()
        .expect("run fedistill data split");
    assert!(
        o.status.success(),
        "{rel}: fedistill {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    named
}

/// The coordinator's and the participants' files, read through `mounts` as each node reads them: the card
/// and the public file of the coordinator (its SHA-256 the card's), and per participant the same card (by
/// digest), private rows that `fedistill data check` accepts and the card's benchmark set.
fn check_nodes_read_the_split(
    what: &str,
    c: (&CoordinatorSettings, &Mounts),
    participants: &[(String, ParticipantSettings, Mounts)],
) {
    use fedistill_shared::data::{check_private, sha256_file, TaskCard};
    let sha = |p: &Path| {
        hex::encode(
            sha256_file(p)
                .unwrap_or_else(|e| panic!("{what}: {}: {e}", p.display()))
                .0,
        )
    };
    let t = task_of(c.0, what);
    let card = TaskCard::load(&c.1.host(&t.card, what)).unwrap_or_else(|e| panic!("{what}: coordinator card: {e}"));
    assert_eq!(
        sha(&c.1.host(&t.public, what)),
        card.public.sha256,
        "{what}: the public file"
    );
    assert_eq!(participants.len(), 3, "{what}");
    for (name, p, mounts) in participants {
        let own = own_of(p, name);
        let mine = TaskCard::load(&mounts.host(&own.card, name)).unwrap_or_else(|e| panic!("{name}: card: {e}"));
        assert_eq!(
            mine.digest(),
            card.digest(),
            "{what} {name}: not the coordinator's card"
        );
        let private = mounts.host(&own.private, name);
        let report = check_private(&private, &mine, &own.csv, 5, own.format);
        assert!(report.usable(), "{what} {name}: {}: {report}", private.display());
        let benchmark = mounts.host(own.benchmark.as_deref().expect("[benchmark]"), name);
        let declared = mine.benchmark.as_ref().map(|b| b.sha256.clone());
        assert_eq!(Some(sha(&benchmark)), declared, "{what} {name}: the benchmark set");
    }
    let privates: BTreeSet<PathBuf> = participants
        .iter()
        .map(|(n, p, m)| m.host(&own_of(p, n).private, n))
        .collect();
    assert_eq!(
        privates.len(),
        participants.len(),
        "{what}: each participant reads its own rows"
    );
}

/// Every template runs on the files `fedistill data split` writes, as the header of the file that mounts
/// them says: deploy/examples (the coordinator on the split's directory, a participant on `nodes/p0`), the
/// compose file's bind mounts, and the Kubernetes claims (`fedistill-coordinator-data` holds the card and the
/// public set, `fedistill-pI-data` participant pI's directory).
#[test]
fn the_templates_run_on_the_files_data_split_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("data");
    // The compose header's command; the Kubernetes headers name the same split.
    assert_eq!(run_data_split("deploy/compose/compose.yaml", &out), "data");
    for rel in ["deploy/k8s/coordinator.yaml", "deploy/k8s/participants.yaml"] {
        let other = tmp.path().join(rel.replace('/', "_"));
        run_data_split(rel, &other);
        assert_eq!(
            std::fs::read(other.join("task.toml")).expect("card"),
            std::fs::read(out.join("task.toml")).expect("card"),
            "{rel}: another split than the compose file's"
        );
    }
    let at = |dir: PathBuf| Mounts(vec![(PathBuf::from("/data"), dir)]);

    // deploy/examples.
    let c = coordinator(&read("deploy/examples/coordinator.toml"), "examples");
    let p = participant(&read("deploy/examples/participant.toml"), "examples");
    let ps: Vec<_> = (0..3)
        .map(|i| (format!("p{i}"), p.clone(), at(out.join("nodes").join(format!("p{i}")))))
        .collect();
    check_nodes_read_the_split("deploy/examples", (&c, &at(out.clone())), &ps);

    // The compose file: each service's bind mounts, `./data` being the split's directory.
    let rel = "deploy/compose/compose.yaml";
    let doc = merged(&yaml_docs(rel)[0]);
    let mounts = |service: &str| {
        Mounts(
            strings(&doc["services"][service]["volumes"])
                .iter()
                .filter_map(|v| {
                    let mut parts = v.split(':');
                    let (host, target) = (parts.next()?, parts.next()?);
                    let host = host.strip_prefix("./data").map(|r| format!("{}{r}", out.display()))?;
                    Some((PathBuf::from(target), PathBuf::from(host)))
                })
                .collect(),
        )
    };
    let c = coordinator(&read("deploy/compose/config/coordinator.toml"), "compose");
    let ps: Vec<_> = (0..3)
        .map(|i| {
            let rel = format!("deploy/compose/config/p{i}.toml");
            (
                format!("p{i}"),
                participant(&read(&rel), &rel),
                mounts(&format!("p{i}")),
            )
        })
        .collect();
    check_nodes_read_the_split(rel, (&c, &mounts("coordinator")), &ps);

    // Kubernetes: the ConfigMaps' configs, each Deployment's data claim mounted read-only at /data.
    let docs = kube_docs();
    let configs: HashMap<String, String> = of_kind(&docs, "ConfigMap")
        .iter()
        .flat_map(|cm| {
            cm["data"]
                .as_hash()
                .into_iter()
                .flatten()
                .filter_map(|(_, v)| v.as_str())
                .map(|t| {
                    (
                        cm["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                        t.to_string(),
                    )
                })
        })
        .collect();
    let mut c = None;
    let mut ps = Vec::new();
    for d in of_kind(&docs, "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        let pod = &d["spec"]["template"]["spec"];
        let volume = |v: &str| {
            pod["volumes"]
                .as_vec()
                .expect("volumes")
                .iter()
                .find(|x| x["name"].as_str() == Some(v))
                .cloned()
                .unwrap_or_else(|| panic!("{name}: no volume {v}"))
        };
        let ct = &pod["containers"][0];
        let data = ct["volumeMounts"]
            .as_vec()
            .expect("volumeMounts")
            .iter()
            .find(|m| m["mountPath"].as_str() == Some("/data"))
            .unwrap_or_else(|| panic!("{name}: nothing mounted at /data"));
        assert_eq!(data["readOnly"].as_bool(), Some(true), "{name}: /data read-only");
        let claim = volume(data["name"].as_str().unwrap_or_default())["persistentVolumeClaim"]["claimName"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: /data is not a claim"))
            .to_string();
        assert!(
            of_kind(&docs, "PersistentVolumeClaim")
                .iter()
                .any(|p| p["metadata"]["name"].as_str() == Some(claim.as_str())),
            "{name}: claim {claim} is not declared"
        );
        let config = volume("config")["configMap"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let text = configs
            .get(&config)
            .unwrap_or_else(|| panic!("{name}: ConfigMap {config}"));
        if let Some(who) = claim.strip_prefix("fedistill-").and_then(|c| c.strip_suffix("-data")) {
            if who == "coordinator" {
                c = Some((coordinator(text, name), at(out.clone())));
            } else {
                ps.push((
                    who.to_string(),
                    participant(text, name),
                    at(out.join("nodes").join(who)),
                ));
            }
        } else {
            panic!("{name}: data claim {claim} is not fedistill-NAME-data");
        }
    }
    let (c, cm) = c.expect("the coordinator Deployment");
    ps.sort_by(|a, b| a.0.cmp(&b.0));
    check_nodes_read_the_split("deploy/k8s", (&c, &cm), &ps);
}

// ---- YAML -------------------------------------------------------------------------------------------

fn yaml_docs(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

/// Resolves YAML merge keys (`<<: *anchor`), which yaml-rust2 leaves as a plain `<<` key.
fn merged(y: &Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            if let Some(Yaml::Hash(base)) = h.get(&Yaml::String("<<".into())).map(merged) {
                for (k, v) in base {
                    out.insert(k.clone(), v.clone());
                }
            }
            for (k, v) in h {
                if k.as_str() != Some("<<") {
                    out.insert(k.clone(), merged(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.iter().map(merged).collect()),
        other => other.clone(),
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn compose_file_parses_and_runs_every_node_read_only() {
    let rel = "deploy/compose/compose.yaml";
    let docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: one document");
    let doc = merged(&docs[0]);
    let services = &doc["services"];
    let names: BTreeSet<&str> = services
        .as_hash()
        .expect("services")
        .keys()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(names, BTreeSet::from(["coordinator", "p0", "p1", "p2"]));
    for name in &names {
        let s = &services[*name];
        assert_eq!(s["read_only"].as_bool(), Some(true), "{name}: read_only");
        assert_eq!(s["user"].as_str(), Some("10001:10001"), "{name}: non-root user");
        assert!(
            strings(&s["tmpfs"]).iter().any(|t| t.starts_with("/tmp")),
            "{name}: tmpfs /tmp"
        );
        let cmd = strings(&s["command"]);
        assert!(!cmd.is_empty(), "{name}: command");
        check_command_line(&cmd, &format!("{rel} service {name}")).unwrap_or_else(|e| panic!("{e}"));
        // Every bind-mounted config file exists in the repository; everything is read-only but the work
        // directory.
        for v in strings(&s["volumes"]) {
            let host = v.split(':').next().unwrap_or_default();
            if host.starts_with("./config/") {
                let p = root().join("deploy/compose").join(host);
                assert!(p.is_file(), "{name}: {host} does not exist");
            }
            assert!(v.ends_with(":ro") || v.ends_with(":/work"), "{name}: {v} is writable");
        }
        // The node's own files: the coordinator gets the card and the public set, participant pN only its
        // own directory of the split.
        let data: Vec<String> = strings(&s["volumes"])
            .into_iter()
            .filter(|v| v.split(':').nth(1).is_some_and(|t| t.starts_with("/data")))
            .collect();
        if *name == "coordinator" {
            assert_eq!(
                data,
                [
                    "./data/task.toml:/data/task.toml:ro",
                    "./data/public-images.idx3-ubyte:/data/public-images.idx3-ubyte:ro"
                ],
                "{name}"
            );
        } else {
            assert_eq!(data, [format!("./data/nodes/{name}:/data:ro")], "{name}");
        }
    }
    let ports = strings(&services["coordinator"]["ports"]);
    assert!(ports.iter().any(|p| p == "4433:4433/udp"), "{ports:?}");
    assert!(
        ports.iter().all(|p| p.contains("/udp") || p.starts_with("127.0.0.1:")),
        "status only on loopback: {ports:?}"
    );
    let c = coordinator(
        &read("deploy/compose/config/coordinator.toml"),
        "compose coordinator.toml",
    );
    assert_eq!(c.bind.port(), 4433);
    // Participants publish nothing.
    for p in ["p0", "p1", "p2"] {
        assert!(services[p]["ports"].is_badvalue(), "{p} must not publish ports");
    }
}

fn kube_docs() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    for rel in deploy_files()
        .into_iter()
        .filter(|f| f.starts_with("deploy/k8s/") && f.ends_with(".yaml"))
    {
        for d in yaml_docs(&rel) {
            assert!(d["apiVersion"].as_str().is_some(), "{rel}: apiVersion");
            assert!(d["kind"].as_str().is_some(), "{rel}: kind");
            assert!(d["metadata"]["name"].as_str().is_some(), "{rel}: metadata.name");
            out.push((rel.clone(), d));
        }
    }
    assert!(
        out.len() >= 10,
        "expected the namespace, coordinator, participants and policies"
    );
    out
}

fn of_kind<'a>(docs: &'a [(String, Yaml)], kind: &str) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|(_, d)| d["kind"].as_str() == Some(kind))
        .map(|(_, d)| d)
        .collect()
}

#[test]
fn kubernetes_manifests_parse_and_their_embedded_configs_are_valid() {
    let docs = kube_docs();
    let mut coordinators = Vec::new();
    let mut participants = 0;
    for cm in of_kind(&docs, "ConfigMap") {
        let name = cm["metadata"]["name"].as_str().unwrap_or_default();
        if let Some(t) = cm["data"]["coordinator.toml"].as_str() {
            let c = coordinator(t, name);
            assert_coordinator_reads_its_data(&c, name);
            coordinators.push(c);
        }
        if let Some(t) = cm["data"]["node.toml"].as_str() {
            let p = participant(t, name);
            assert_eq!(p.kit, Path::new("/kits/kit"), "{name}");
            assert_participant_reads_its_data(&p, name);
            participants += 1;
        }
    }
    assert_eq!(coordinators.len(), 1);
    let c = &coordinators[0];
    assert_eq!(participants, 3, "one ConfigMap per participant");
    let status_port = c.status.expect("status address").port() as i64;
    let quic_port = c.bind.port() as i64;

    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 4, "a coordinator and three participants");
    for d in &deployments {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        assert_eq!(d["spec"]["replicas"].as_i64(), Some(1), "{name}");
        assert_eq!(d["spec"]["strategy"]["type"].as_str(), Some("Recreate"), "{name}");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{name}");
        let containers = pod["containers"].as_vec().expect("containers");
        assert_eq!(containers.len(), 1, "{name}");
        let ct = &containers[0];
        assert_eq!(
            ct["securityContext"]["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{name}"
        );
        assert_eq!(
            ct["securityContext"]["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        let args = strings(&ct["args"]);
        check_command_line(&args, name).unwrap_or_else(|e| panic!("{e}"));
        // Every volume mount has a volume.
        let vols: BTreeSet<&str> = pod["volumes"]
            .as_vec()
            .expect("volumes")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for m in ct["volumeMounts"].as_vec().expect("volumeMounts") {
            let v = m["name"].as_str().unwrap_or_default();
            assert!(vols.contains(v), "{name}: mount {v} has no volume");
        }
        if args.first().map(String::as_str) == Some("coordinator") {
            let ports = ct["ports"].as_vec().expect("ports");
            let port = |n: &str| {
                ports
                    .iter()
                    .find(|p| p["name"].as_str() == Some(n))
                    .expect("named port")
            };
            assert_eq!(port("quic")["containerPort"].as_i64(), Some(quic_port));
            assert_eq!(port("quic")["protocol"].as_str(), Some("UDP"));
            assert_eq!(port("status")["containerPort"].as_i64(), Some(status_port));
            for probe in ["livenessProbe", "readinessProbe"] {
                assert_eq!(ct[probe]["httpGet"]["path"].as_str(), Some("/healthz"), "{probe}");
                assert_eq!(ct[probe]["httpGet"]["port"].as_str(), Some("status"), "{probe}");
            }
            // The federation Secret is laid out as the federation directory the coordinator reads.
            let fed = pod["volumes"]
                .as_vec()
                .expect("volumes")
                .iter()
                .find(|v| v["name"].as_str() == Some("federation"))
                .expect("federation volume");
            let paths: BTreeSet<String> = fed["secret"]["items"]
                .as_vec()
                .expect("items")
                .iter()
                .filter_map(|i| i["path"].as_str().map(str::to_string))
                .collect();
            for needed in coordinator_reads() {
                assert!(paths.contains(needed), "the coordinator Secret lacks {needed}");
            }
            // Its status address is not loopback, so the coordinator needs the console token (it cannot
            // create one on the read-only Secret mount).
            assert!(
                paths.contains("operator/console.token"),
                "the coordinator Secret lacks operator/console.token"
            );
            assert!(
                !paths.iter().any(|p| p.contains("ca.key") || p.contains("operator.key")),
                "offline keys in the Secret"
            );
            assert!(
                pod["volumes"]
                    .as_vec()
                    .expect("volumes")
                    .iter()
                    .any(|v| !v["persistentVolumeClaim"].is_badvalue()),
                "the coordinator's store is on a PersistentVolumeClaim"
            );
        }
    }
    let services = of_kind(&docs, "Service");
    assert!(
        services.iter().any(|s| s["spec"]["ports"].as_vec().is_some_and(|ps| ps
            .iter()
            .any(|p| p["protocol"].as_str() == Some("UDP") && p["port"].as_i64() == Some(quic_port)))),
        "a UDP Service on the QUIC port"
    );
}

/// Files of the federation directory the coordinator opens (FederationLayout: config, CA certificate,
/// server certificate and key, log signing key, operator public key, roster, CRL). The netns suite runs
/// the coordinator from a directory holding exactly these (deploy/netns/run.sh, `coordinator_view`).
fn coordinator_reads() -> [&'static str; 8] {
    [
        "federation.toml",
        "ca/ca.crt.pem",
        "coordinator/server.crt.pem",
        "coordinator/server.key.pem",
        "coordinator/signing.key.pem",
        "operator/operator.pub.pem",
        "roster.toml",
        "crl.pem",
    ]
}

#[test]
fn network_policies_deny_participant_ingress_and_allow_only_quic_and_dns_egress() {
    let docs = kube_docs();
    let policies = of_kind(&docs, "NetworkPolicy");
    let p = policies
        .iter()
        .find(|p| {
            p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"].as_str() == Some("participant")
        })
        .expect("a participants policy");
    assert_eq!(strings(&p["spec"]["policyTypes"]), ["Ingress", "Egress"]);
    assert_eq!(p["spec"]["ingress"].as_vec().map(Vec::len), Some(0), "no inbound rule");
    let mut allowed = BTreeSet::new();
    for rule in p["spec"]["egress"].as_vec().expect("egress") {
        for port in rule["ports"].as_vec().expect("ports") {
            allowed.insert((
                port["protocol"].as_str().unwrap_or_default().to_string(),
                port["port"].as_i64().unwrap_or(0),
            ));
        }
        assert!(
            rule["to"].as_vec().is_some_and(|t| !t.is_empty()),
            "every egress rule names its destination"
        );
    }
    let expected: BTreeSet<(String, i64)> = [("UDP", 4433), ("UDP", 53), ("TCP", 53)]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b))
        .collect();
    assert_eq!(allowed, expected);
}

// ---- Containerfile and systemd ----------------------------------------------------------------------

/// The Containerfile's stages as (FROM line, lines up to the next FROM).
fn stages(text: &str) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        if line.starts_with("FROM ") {
            out.push((line, Vec::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push(line);
        }
    }
    out
}

#[test]
fn containerfile_takes_its_bases_as_build_args_and_runs_non_root_on_bookworm() {
    let text = read("deploy/Containerfile");
    // The base images are build arguments declared before the first stage, defaulting to the public images
    // (an air-gapped builder passes its mirror's or a locally made base).
    let arg = |name: &str| -> String {
        let prefix = format!("ARG {name}=");
        text.lines()
            .take_while(|l| !l.starts_with("FROM "))
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
            .unwrap_or_else(|| panic!("no `ARG {name}=` before the first FROM"))
    };
    assert!(arg("BUILD_IMAGE").contains("rust:1-bookworm"), "{}", arg("BUILD_IMAGE"));
    assert!(
        arg("RUNTIME_IMAGE").contains("debian:bookworm-slim"),
        "{}",
        arg("RUNTIME_IMAGE")
    );
    let st = stages(&text);
    let froms: Vec<&str> = st.iter().map(|(f, _)| *f).collect();
    // base (runtime file system), prebuilt (a binary from the context), build (from source), runtime (the
    // default target: the last stage). `prebuilt` precedes `build`, so builders that build every stage up to
    // `--target prebuilt` (Buildah 1.28) never need the Rust image.
    assert_eq!(
        froms,
        [
            "FROM ${RUNTIME_IMAGE} AS base",
            "FROM base AS prebuilt",
            "FROM ${BUILD_IMAGE} AS build",
            "FROM base AS runtime",
        ],
        "stages"
    );
    let body = |name: &str| -> &Vec<&str> {
        &st.iter()
            .find(|(f, _)| f.ends_with(&format!(" AS {name}")))
            .unwrap_or_else(|| panic!("stage {name}"))
            .1
    };
    assert!(body("build")
        .iter()
        .any(|l| l.contains("cargo build --release --locked")));
    assert_eq!(
        body("runtime")
            .iter()
            .filter(|l| l.starts_with("COPY "))
            .copied()
            .collect::<Vec<_>>(),
        ["COPY --from=build /out/fedistill /usr/local/bin/fedistill"]
    );
    let prebuilt_copy: Vec<&str> = body("prebuilt")
        .iter()
        .filter(|l| l.starts_with("COPY "))
        .copied()
        .collect();
    assert_eq!(prebuilt_copy, ["COPY prebuilt/fedistill /usr/local/bin/fedistill"]);
    // Everything the image is configured with lives in `base`, so both ways to the binary get it.
    let base = body("base");
    let user = base.iter().rfind(|l| l.starts_with("USER ")).expect("USER in base");
    assert!(!user.contains(" 0") && !user.contains("root"), "{user}");
    assert!(
        base.iter().all(|l| !l.contains("apt-get")),
        "the base stage needs no network"
    );
    // The binary shuts down gracefully on SIGTERM, the engines' default stop signal (tests/federation.rs).
    assert!(
        text.lines().all(|l| !l.starts_with("STOPSIGNAL ")),
        "no STOPSIGNAL: SIGTERM, the default, is handled"
    );
    let json_of = |directive: &str| -> Vec<String> {
        let line = base
            .iter()
            .find(|l| l.starts_with(directive))
            .unwrap_or_else(|| panic!("{directive} in base"));
        serde_json::from_str(line[directive.len()..].trim()).unwrap_or_else(|e| panic!("{directive} exec form: {e}"))
    };
    assert_eq!(json_of("ENTRYPOINT"), ["/usr/local/bin/fedistill"]);
    check_command_line(&json_of("CMD"), "Containerfile CMD").unwrap_or_else(|e| panic!("{e}"));
    let volumes = json_of("VOLUME");
    for v in ["/kits", "/data", "/work"] {
        assert!(volumes.iter().any(|x| x == v), "VOLUME {v}");
    }
    // deploy/container/build.sh stages a context holding what the base and prebuilt stages copy, and builds
    // the `prebuilt` target on the base it names.
    let build = read("deploy/container/build.sh");
    for line in text.lines().filter(|l| l.starts_with("COPY deploy/")) {
        let src = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(root().join(src).is_file(), "COPY source {src} missing");
        assert!(
            build.contains(&format!("\"$ctx/{src}\"")),
            "build.sh does not stage {src}"
        );
    }
    assert!(
        build.contains("\"$ctx/prebuilt/fedistill\""),
        "build.sh stages the binary elsewhere"
    );
    assert!(build.contains("--target prebuilt") && build.contains("\"RUNTIME_IMAGE=$BASE\""));
    assert!(build.contains("-f \"$ctx/deploy/Containerfile\""));
}

/// The coordinator's Secret is made by the `kubectl create secret` command in coordinator.yaml's header
/// (`--from-file=KEY=$F/PATH`, PATH in the federation directory) and mounted with `items` (KEY -> PATH):
/// both must pair the same keys with the same paths, or the coordinator finds a file in the wrong place.
/// deploy/container/run.sh builds the Secret from the header when it plays the manifests under Podman.
#[test]
fn the_coordinator_secret_command_and_its_mounted_items_agree() {
    let text = read("deploy/k8s/coordinator.yaml");
    let header: BTreeSet<(String, String)> = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.strip_prefix("--from-file="))
        .map(|kv| {
            let (k, p) = kv.split_once("=$F/").unwrap_or_else(|| panic!("not KEY=$F/PATH: {kv}"));
            (k.to_string(), p.to_string())
        })
        .collect();
    let docs = kube_docs();
    let deployment = of_kind(&docs, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str() == Some("fedistill-coordinator"))
        .expect("the coordinator Deployment");
    let fed = deployment["spec"]["template"]["spec"]["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["name"].as_str() == Some("federation"))
        .expect("federation volume");
    let items: BTreeSet<(String, String)> = fed["secret"]["items"]
        .as_vec()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap_or_default().to_string(),
                i["path"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(header.len() >= coordinator_reads().len(), "{header:?}");
    assert_eq!(
        header, items,
        "coordinator.yaml: the header's --from-file pairs vs the volume's items"
    );
}

/// A systemd unit as (section, key, value) triples; panics on a line that is none of comment, section,
/// key=value.
fn unit(rel: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for (i, line) in read(rel).lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') && l.ends_with(']') {
            section = l[1..l.len() - 1].to_string();
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("{rel}:{}: not key=value: {l}", i + 1));
        assert!(!section.is_empty(), "{rel}:{}: key outside a section", i + 1);
        out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
    }
    out
}

#[test]
fn systemd_units_are_hardened_and_start_real_commands() {
    for (rel, state) in [
        ("deploy/systemd/fedistill-coordinator.service", "fedistill-coordinator"),
        ("deploy/systemd/fedistill-participant.service", "fedistill-participant"),
    ] {
        let u = unit(rel);
        let get = |k: &str| -> Vec<&str> {
            u.iter()
                .filter(|(s, key, _)| s == "Service" && key == k)
                .map(|(_, _, v)| v.as_str())
                .collect()
        };
        for (k, v) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("Restart", "on-failure"),
            ("User", "fedistill"),
            ("StateDirectory", state),
        ] {
            assert_eq!(get(k), [v], "{rel}: {k}");
        }
        assert_eq!(get("ReadWritePaths"), [format!("/var/lib/{state}").as_str()], "{rel}");
        let exec = get("ExecStart");
        assert_eq!(exec.len(), 1, "{rel}");
        let words: Vec<String> = exec[0].split_whitespace().map(str::to_string).collect();
        assert_eq!(words[0], "/usr/local/bin/fedistill", "{rel}");
        check_command_line(&words[1..], rel).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            u.iter()
                .any(|(s, k, v)| s == "Install" && k == "WantedBy" && v == "multi-user.target"),
            "{rel}"
        );
    }
}

// ---- fedistill command lines ------------------------------------------------------------------------

/// `fedistill <path...> --help` outputs, cached.
struct Help(HashMap<Vec<String>, String>);

impl Help {
    fn get(&mut self, path: &[String]) -> &str {
        self.0.entry(path.to_vec()).or_insert_with(|| {
            let out = Command::new(EXE)
                .args(path)
                .arg("--help")
                .output()
                .expect("run fedistill --help");
            assert!(out.status.success(), "fedistill {} --help failed", path.join(" "));
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    }

    /// Subcommand names listed under `Commands:`.
    fn subcommands(&mut self, path: &[String]) -> BTreeSet<String> {
        let text = self.get(path);
        let mut out = BTreeSet::new();
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with("Commands:") {
                inside = true;
                continue;
            }
            if inside {
                if !line.starts_with("  ") {
                    break;
                }
                if let Some(w) = line.split_whitespace().next() {
                    out.insert(w.to_string());
                }
            }
        }
        out.remove("help");
        out
    }
}

thread_local! {
    static HELP: std::cell::RefCell<Help> = std::cell::RefCell::new(Help(HashMap::new()));
}

/// Checks one command line (the words after `fedistill`): it descends through real subcommands, and every
/// `--flag` must be listed in the deepest command's `--help`. Returns the subcommand path.
fn check_words(words: &[String], origin: &str) -> Result<Vec<String>, String> {
    HELP.with(|h| {
        let mut h = h.borrow_mut();
        let mut path: Vec<String> = Vec::new();
        // Prose ("the fedistill binary at ...", "kubectl -n fedistill create ..."): the word after
        // `fedistill` is neither a subcommand nor a flag, so this is no invocation.
        if let Some(first) = words.first() {
            if !first.starts_with("--") && !h.subcommands(&path).contains(first) {
                return Ok(path);
            }
        }
        for w in words {
            if h.subcommands(&path).contains(w) {
                path.push(w.clone());
            } else {
                break;
            }
        }
        let help = h.get(&path).to_string();
        for w in words.iter().filter(|w| w.starts_with("--")) {
            let flag = w.split('=').next().unwrap_or(w);
            let found = help.match_indices(flag).any(|(i, _)| {
                let next = help[i + flag.len()..].chars().next();
                !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
            if !found {
                return Err(format!(
                    "{origin}: `fedistill {} ... {flag}`: no such flag in `fedistill {} --help`",
                    path.join(" "),
                    path.join(" ")
                ));
            }
        }
        Ok(path)
    })
}

/// A whole argument vector (compose `command`, Kubernetes `args`, `CMD`, `ExecStart`) must name a real
/// subcommand.
fn check_command_line(words: &[String], origin: &str) -> Result<(), String> {
    let path = check_words(words, origin)?;
    if path.is_empty() {
        return Err(format!("{origin}: {words:?} names no fedistill subcommand"));
    }
    Ok(())
}

/// Every `fedistill ...` invocation in a text: the words after a `fedistill` token (also
/// `/usr/local/bin/fedistill` and, in shell scripts, `"$BIN"`) up to the end of the shell command (line
/// end, backtick, `;`, `|`, `&`, `)`, `#`, `>`, `<`).
fn invocations(text: &str, shell_bin: bool) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        // A trailing backslash continues the command on the next line.
        let mut line = raw.to_string();
        let mut k = n + 1;
        while line.trim_end().ends_with('\\') {
            line = line.trim_end().trim_end_matches('\\').to_string();
            if let Some(next) = text.lines().nth(k) {
                line.push(' ');
                line.push_str(next);
            }
            k += 1;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for (i, t) in tokens.iter().enumerate() {
            let t = t.trim_start_matches(['`', '(', '\'']);
            let is_bin = t == "fedistill" || t.ends_with("/fedistill") || (shell_bin && t == "\"$BIN\"");
            if !is_bin {
                continue;
            }
            let mut words = Vec::new();
            for w in &tokens[i + 1..] {
                let end = w.find(['`', ';', '|', '&', ')', '#', '>', '<', '\'']);
                let clean = &w[..end.unwrap_or(w.len())];
                let clean = clean.trim_matches(['"', ',', ':', '.']);
                if !clean.is_empty() {
                    words.push(clean.to_string());
                }
                if end.is_some() {
                    break;
                }
            }
            out.push((n + 1, words));
        }
    }
    out
}

#[test]
fn every_fedistill_command_in_deploy_and_the_operations_doc_exists() {
    let mut sources = deploy_files();
    sources.push("docs/operations.md".to_string());
    let mut checked = BTreeSet::new();
    let mut errors = Vec::new();
    for rel in &sources {
        let Ok(text) = std::fs::read_to_string(root().join(rel)) else {
            continue;
        };
        for (line, words) in invocations(&text, rel.ends_with(".sh")) {
            match check_words(&words, &format!("{rel}:{line}")) {
                Ok(path) if !path.is_empty() => {
                    checked.insert(path.join(" "));
                }
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
    }
    assert!(errors.is_empty(), "unknown commands or flags:\n{}", errors.join("\n"));
    // The scan found the commands an operator needs (so this test cannot pass on an empty scan).
    for needed in [
        "provision init",
        "provision add-participant",
        "provision sign",
        "provision revoke",
        "participant enroll",
        "participant",
        "coordinator",
        "audit export",
        "audit verify",
        "data split",
        "data check",
    ] {
        assert!(
            checked.contains(needed),
            "no `fedistill {needed}` found in deploy/ or docs/operations.md; found {checked:?}"
        );
    }
}

#[test]
fn the_command_checker_refuses_unknown_flags_and_commands() {
    let w = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        check_words(&w("provision init --federation x --out d"), "t"),
        Ok(vec!["provision".to_string(), "init".to_string()])
    );
    let err = check_words(&w("provision init --federation x --outdir d"), "t").expect_err("bad flag");
    assert!(err.contains("--outdir"), "{err}");
    // `--config` exists on `coordinator`, not on `audit export`.
    assert!(check_words(&w("audit export --config x"), "t").is_err());
    assert!(check_command_line(&w("coordinate --config x"), "t").is_err());
    // Extraction: stops at shell separators, joins continued lines, finds absolute paths.
    let text = "run `fedistill audit verify b --trust t` now\n/usr/local/bin/fedistill coordinator \\\n  --config c # note --bogus\n";
    let inv = invocations(text, false);
    assert_eq!(inv[0].1, w("audit verify b --trust t"));
    assert_eq!(inv[1].1, w("coordinator --config c"));
}
