//! The example Kubernetes manifests of `packaging/kubernetes/` agree with the daemon and the
//! image: the ConfigMap's configuration loads (with `${POD_NAME}` expanded) and reads the S3
//! keys from where the Secret is mounted, the status port, probes and scrape annotations match
//! `http.address`, the LMDB paths match PowerDNS's `lmdb-filename` and the shared volume, and
//! the pod runs as the image's user with a writable /tmp on a read-only root. Schema validation
//! is `tests/kubernetes.sh` (kubernetes-validate); this is what a schema cannot see.

use std::path::Path;

use serde_norway::Value;

fn manifest(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/kubernetes")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("valid YAML"))
        .collect()
}

/// `v[a][b]...`, or a panic naming the missing key.
fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| {
        v.get(*k)
            .unwrap_or_else(|| panic!("missing {k} in {path:?}"))
    })
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_sequence()
        .expect("a list")
        .iter()
        .find(|x| x.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no entry named {name}"))
}

fn mount_path<'a>(container: &'a Value, volume: &str) -> &'a str {
    s(get(
        named(get(container, &["volumeMounts"]), volume),
        &["mountPath"],
    ))
}

#[test]
fn manifests_agree_with_the_daemon_and_the_image() {
    let cm = &manifest("lightningstream-config.yaml")[0];
    let text = s(get(cm, &["data", "lightningstream.yaml"]));
    let cfg = lightningstream::config::parse_with_env(text, "configmap", |k| {
        (k == "POD_NAME").then(|| "pdns-auth-0".to_string())
    })
    .unwrap_or_else(|e| panic!("the ConfigMap's configuration does not load: {e}"));
    assert_eq!(cfg.instance, "pdns-auth-0");
    let s3 = cfg.s3_options().expect("valid s3 options");
    assert!(s3.access_key.is_empty() && s3.secret_key.is_empty());

    let sts = &manifest("statefulset.yaml")[0];
    let pod = get(sts, &["spec", "template", "spec"]);
    assert_eq!(pod.get("shareProcessNamespace"), Some(&Value::Bool(true)));
    // The image's user (packaging/Containerfile: USER 953:953).
    let containerfile = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/Containerfile"),
    )
    .expect("Containerfile");
    assert!(containerfile.contains("\nUSER 953:953\n"));
    for key in ["runAsUser", "runAsGroup", "fsGroup"] {
        assert_eq!(
            get(pod, &["securityContext", key]).as_u64(),
            Some(953),
            "{key}"
        );
    }
    let containers = get(pod, &["containers"]);
    let ls = named(containers, "lightningstream");
    let pdns = named(containers, "pdns-auth");

    // S3 keys: the files the configuration names are the Secret's keys, where it is mounted.
    let secret = &manifest("lightningstream-s3-secret.yaml")[0];
    let keys_dir = mount_path(ls, "s3-keys");
    assert_eq!(
        s(get(
            named(get(pod, &["volumes"]), "s3-keys"),
            &["secret", "secretName"]
        )),
        s(get(secret, &["metadata", "name"]))
    );
    for (file, key) in [
        (&s3.access_key_file, "access_key"),
        (&s3.secret_key_file, "secret_key"),
    ] {
        assert_eq!(*file, format!("{keys_dir}/{key}"));
        get(secret, &["stringData", key]);
    }
    // The configuration's directory is the ConfigMap's mount, and the image's default command
    // reads lightningstream.yaml from it.
    assert_eq!(
        mount_path(ls, "lightningstream-config"),
        "/etc/lightningstream"
    );
    assert!(
        containerfile
            .contains(r#"CMD ["--config", "/etc/lightningstream/lightningstream.yaml", "sync"]"#)
    );
    assert!(ls.get("command").is_none() && ls.get("args").is_none());
    let env = named(get(ls, &["env"]), "POD_NAME");
    assert_eq!(
        s(get(env, &["valueFrom", "fieldRef", "fieldPath"])),
        "metadata.name"
    );

    // Status port: http.address, the container port, both probes, the scrape annotation.
    let port: u64 = cfg
        .http
        .address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("http.address with a port");
    let status = named(get(ls, &["ports"]), "ls-status");
    assert_eq!(get(status, &["containerPort"]).as_u64(), Some(port));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(s(get(ls, &[probe, "httpGet", "path"])), "/healthz");
        assert_eq!(s(get(ls, &[probe, "httpGet", "port"])), "ls-status");
    }
    let annotations = get(sts, &["spec", "template", "metadata", "annotations"]);
    assert_eq!(
        s(get(annotations, &["prometheus.io/port"])),
        port.to_string()
    );
    assert_eq!(s(get(annotations, &["prometheus.io/path"])), "/metrics");
    let monitor = &manifest("podmonitor.yaml")[0];
    let endpoint = &get(monitor, &["spec", "podMetricsEndpoints"])[0];
    assert_eq!(s(get(endpoint, &["port"])), "ls-status");

    // One LMDB volume for both containers, and PowerDNS's file is the synced one.
    let lmdb_dir = mount_path(ls, "lmdb");
    assert_eq!(mount_path(pdns, "lmdb"), lmdb_dir);
    let pdns_cm = manifest("pdns-config.yaml");
    let pdns_conf = s(get(&pdns_cm[0], &["data", "lmdb.conf"]));
    let filename = pdns_conf
        .lines()
        .find_map(|l| l.strip_prefix("lmdb-filename="))
        .expect("lmdb-filename");
    assert!(pdns_conf.contains("\nlmdb-lightning-stream=yes\n"));
    assert_eq!(cfg.lmdbs["main"].path, filename);
    assert_eq!(cfg.lmdbs["shard"].path, format!("{filename}-0"));
    for db in cfg.lmdbs.values() {
        assert!(db.path.starts_with(&format!("{lmdb_dir}/")), "{}", db.path);
        assert!(db.schema_tracks_changes);
    }

    // Read-only root, and /tmp (snapshot temporary files) writable.
    assert_eq!(
        get(ls, &["securityContext", "readOnlyRootFilesystem"]),
        &Value::Bool(true)
    );
    assert_eq!(mount_path(ls, "tmp"), "/tmp");
    get(named(get(pod, &["volumes"]), "tmp"), &["emptyDir"]);
}
