//! Real manifest files through the API's write path: parse → decode →
//! defaults → validation; every invalid case names its exact field path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use herd_agent::api::defaults::{apply_defaults, on_create};
use herd_agent::api::manifest::{Object, decode, parse_documents};
use herd_agent::api::validation::{validate, validate_update};
use herd_agent::api::{FieldErrorKind, Resource};
use k8s_openapi::jiff::Timestamp;

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/manifests")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn objects(text: &str) -> Vec<Object> {
    parse_documents(text, "test")
        .unwrap()
        .into_iter()
        .map(|v| decode(v).unwrap())
        .collect()
}

/// The field paths of the validation errors of the single object in `yaml`.
fn invalid_fields(yaml: &str) -> Vec<(String, FieldErrorKind)> {
    let mut objs = objects(yaml);
    assert_eq!(objs.len(), 1);
    let mut o = objs.remove(0);
    apply_defaults(&mut o);
    let e = validate(&o).expect_err("expected invalid");
    assert_eq!(e.code(), 422, "{e}");
    e.causes.iter().map(|c| (c.field.clone(), c.kind)).collect()
}

fn assert_fields(yaml: &str, want: &[&str]) {
    let got = invalid_fields(yaml);
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, want, "{yaml}");
}

fn pod(spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: default\nspec:\n{spec}")
}

#[test]
fn app_fixture_decodes_defaults_and_validates() {
    let objs = objects(&fixture("app.yaml"));
    let kinds: Vec<Resource> = objs.iter().map(Object::resource).collect();
    assert_eq!(
        kinds,
        [
            Resource::Namespaces,
            Resource::ConfigMaps,
            Resource::Secrets,
            Resource::Pods
        ]
    );
    let now = Timestamp::from_second(1_700_000_000).unwrap();
    for mut o in objs {
        on_create(&mut o, None, now);
        validate(&o).unwrap_or_else(|e| panic!("{}: {e}", o.name()));
        if let Object::Pod(p) = &o {
            let spec = p.spec.as_ref().unwrap();
            assert_eq!(spec.restart_policy.as_deref(), Some("OnFailure"));
            let v = o.to_value();
            // YAML 1.1 octal as kubectl reads it.
            assert_eq!(v["spec"]["volumes"][1]["secret"]["defaultMode"], 0o400);
            assert_eq!(v["spec"]["volumes"][0]["configMap"]["defaultMode"], 420);
            assert_eq!(v["spec"]["containers"][0]["imagePullPolicy"], "Always");
            assert_eq!(
                v["spec"]["initContainers"][0]["imagePullPolicy"],
                "IfNotPresent"
            );
            assert_eq!(v["status"]["qosClass"], "Burstable");
            assert_eq!(o.namespace(), Some("shop"));
        }
    }
}

#[test]
fn list_json_expands_and_generates_names() {
    let objs = objects(&fixture("list.json"));
    assert_eq!(objs.len(), 3);
    let mut job = objs[1].clone();
    on_create(&mut job, Some("batch"), Timestamp::UNIX_EPOCH);
    assert!(job.name().starts_with("job-"), "{}", job.name());
    assert_eq!(job.namespace(), Some("batch"));
    validate(&job).unwrap();
}

#[test]
fn syntax_errors_name_document_and_line() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\n\
                kind: ConfigMap\nmetadata: {name: b\n";
    let e = parse_documents(text, "bad.yaml").unwrap_err();
    assert_eq!(e.index, 2);
    assert!(e.message.contains("line"), "{e}");
    let e = parse_documents("- 1\n- 2\n", "list.yaml").unwrap_err();
    assert_eq!(e.message, "expected an object, got an array");
}

#[test]
fn decode_errors_are_bad_requests() {
    let v = parse_documents(
        &pod("  containers:\n  - name: c\n    image: i\n    imagePullPolicyy: Always\n"),
        "t",
    )
    .unwrap();
    let e = decode(v[0].clone()).unwrap_err();
    assert_eq!(e.code(), 400);
    assert_eq!(
        e.message,
        "strict decoding error: unknown field \"spec.containers[0].imagePullPolicyy\""
    );
    let v = parse_documents(
        &pod("  containers:\n  - name: c\n    image: i\n    ports:\n    - containerPort: x\n"),
        "t",
    )
    .unwrap();
    let e = decode(v[0].clone()).unwrap_err();
    assert!(
        e.message.ends_with(
            "spec.containers[0].ports[0].containerPort: invalid type: string \"x\", expected i32"
        ),
        "{e}"
    );
    let v = parse_documents("apiVersion: apps/v1\nkind: StatefulSet\n", "t").unwrap();
    assert_eq!(
        decode(v[0].clone()).unwrap_err().message,
        "no matches for kind \"StatefulSet\" in version \"apps/v1\""
    );
    // A group kind under the wrong version is unknown too.
    let v = parse_documents("apiVersion: v1\nkind: Deployment\n", "t").unwrap();
    assert_eq!(
        decode(v[0].clone()).unwrap_err().message,
        "no matches for kind \"Deployment\" in version \"v1\""
    );
}

#[test]
fn metadata_errors() {
    assert_fields(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n  namespace: default\n  \
         labels:\n    ok: \"-bad\"\n    \"a/b/c\": x\n",
        &["metadata.name", "metadata.labels", "metadata.labels"],
    );
    assert_fields(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a.b\n",
        &["metadata.name"],
    );
    let long = "a".repeat(254);
    assert_fields(
        &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {long}\n  namespace: default\n"),
        &["metadata.name"],
    );
}

#[test]
fn container_errors() {
    assert_fields(&pod("  containers: []\n"), &["spec.containers"]);
    let got = invalid_fields(&pod(
        "  initContainers:\n  - name: c\n    image: i\n  containers:\n  - name: c\n  - name: Web\n    image: i\n",
    ));
    assert_eq!(
        got,
        [
            (
                "spec.containers[0].name".to_string(),
                FieldErrorKind::Duplicate
            ),
            (
                "spec.containers[0].image".to_string(),
                FieldErrorKind::Required
            ),
            (
                "spec.containers[1].name".to_string(),
                FieldErrorKind::Invalid
            ),
        ]
    );
    assert_fields(
        &pod(
            "  containers:\n  - name: c\n    image: i\n    ports:\n    - containerPort: 0\n    \
             - containerPort: 80\n      hostPort: 70000\n      protocol: ICMP\n      name: HTTP\n    \
             - containerPort: 81\n      name: web\n    - containerPort: 82\n      name: web\n",
        ),
        &[
            "spec.containers[0].ports[0].containerPort",
            "spec.containers[0].ports[1].hostPort",
            "spec.containers[0].ports[1].protocol",
            // "HTTP": upper case, and no lower-case letter.
            "spec.containers[0].ports[1].name",
            "spec.containers[0].ports[1].name",
            "spec.containers[0].ports[3].name",
        ],
    );
    assert_fields(
        &pod(
            "  hostNetwork: true\n  containers:\n  - name: c\n    image: i\n    ports:\n    \
             - containerPort: 80\n      hostPort: 8080\n",
        ),
        &["spec.containers[0].ports[0].hostPort"],
    );
}

#[test]
fn env_and_resource_errors() {
    assert_fields(
        &pod(
            "  containers:\n  - name: c\n    image: i\n    env:\n    - name: 1BAD\n    \
             - name: A\n      value: x\n      valueFrom:\n        fieldRef: {fieldPath: metadata.name}\n    \
             - name: B\n      valueFrom: {}\n    - name: C\n      valueFrom:\n        \
             configMapKeyRef: {name: cm, key: \"a/b\"}\n        secretKeyRef: {name: s, key: k}\n    \
             - name: D\n      valueFrom:\n        fieldRef: {fieldPath: spec.bogus}\n",
        ),
        &[
            "spec.containers[0].env[0].name",
            "spec.containers[0].env[1].valueFrom",
            "spec.containers[0].env[2].valueFrom",
            "spec.containers[0].env[3].valueFrom",
            "spec.containers[0].env[3].valueFrom.configMapKeyRef.key",
            "spec.containers[0].env[4].valueFrom.fieldRef.fieldPath",
        ],
    );
    let got = invalid_fields(&pod(
        "  containers:\n  - name: c\n    image: i\n    resources:\n      requests:\n        \
         cpu: \"2\"\n        memory: 1Gi\n        gpu: \"1\"\n      limits:\n        cpu: \"1\"\n        \
         memory: lots\n",
    ));
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.containers[0].resources.limits[memory]",
            "spec.containers[0].resources.requests[gpu]",
            "spec.containers[0].resources.requests[cpu]",
        ]
    );
}

#[test]
fn volume_errors() {
    assert_fields(
        &pod(
            "  containers:\n  - name: c\n    image: i\n    volumeMounts:\n    - name: nope\n      \
             mountPath: /a\n    - name: a\n      mountPath: /a\n    - name: a\n      mountPath: /b\n      \
             subPath: ../x\n  volumes:\n  - name: a\n    emptyDir: {}\n  - name: a\n    emptyDir: {}\n  \
             - name: b\n  - name: c\n    emptyDir: {}\n    hostPath: {path: /x}\n  - name: d\n    \
             hostPath: {path: /x, type: Weird}\n  - name: e\n    configMap:\n      name: cm\n      \
             defaultMode: 01000\n      items:\n      - key: k\n        path: ../k\n  - name: f\n    \
             secret: {}\n  - name: g\n    emptyDir: {sizeLimit: -1Gi}\n",
        ),
        &[
            "spec.volumes[1].name",
            "spec.volumes[2]",
            "spec.volumes[3].hostPath",
            "spec.volumes[4].hostPath.type",
            "spec.volumes[5].configMap.defaultMode",
            "spec.volumes[5].configMap.items[0].path",
            "spec.volumes[6].secret.secretName",
            "spec.volumes[7].emptyDir.sizeLimit",
            "spec.containers[0].volumeMounts[0].name",
            "spec.containers[0].volumeMounts[1].mountPath",
            "spec.containers[0].volumeMounts[2].subPath",
        ],
    );
}

#[test]
fn probe_lifecycle_and_policy_errors() {
    assert_fields(
        &pod(
            "  restartPolicy: Sometimes\n  dnsPolicy: Google\n  terminationGracePeriodSeconds: -1\n  \
             initContainers:\n  - name: i\n    image: i\n    restartPolicy: Never\n    \
             livenessProbe:\n      exec: {command: [\"true\"]}\n  containers:\n  - name: c\n    \
             image: i\n    livenessProbe:\n      successThreshold: 2\n      exec: {command: [\"true\"]}\n      \
             tcpSocket: {port: 1}\n    readinessProbe: {periodSeconds: -5, httpGet: {port: 80}}\n    \
             lifecycle:\n      postStart: {}\n    securityContext:\n      runAsUser: -1\n      \
             capabilities: {add: [NET_WIZARD]}\n      seccompProfile: {type: Strict}\n  \
             securityContext:\n    sysctls:\n    - {name: Bad.Name, value: \"1\"}\n",
        ),
        &[
            "spec.initContainers[0].restartPolicy",
            "spec.initContainers[0].livenessProbe",
            "spec.containers[0].livenessProbe.tcpSocket",
            "spec.containers[0].livenessProbe.successThreshold",
            "spec.containers[0].readinessProbe.periodSeconds",
            "spec.containers[0].lifecycle.postStart",
            "spec.containers[0].securityContext.runAsUser",
            "spec.containers[0].securityContext.seccompProfile.type",
            "spec.containers[0].securityContext.capabilities.add[0]",
            "spec.restartPolicy",
            "spec.dnsPolicy",
            "spec.terminationGracePeriodSeconds",
            "spec.securityContext.sysctls[0].name",
        ],
    );
}

#[test]
fn config_map_and_secret_errors() {
    assert_fields(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: d}\ndata:\n  \"a b\": x\n  \
         k: v\nbinaryData:\n  k: AA==\n",
        &["data[a b]", "binaryData[k]"],
    );
    let big = "x".repeat((1 << 20) + 1);
    assert_fields(
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: d}}\ndata:\n  k: {big}\n"
        ),
        &["data"],
    );
    assert_fields(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: d}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: x\n  ..bad: v\n",
        &["stringData[..bad]", "data[tls.key]"],
    );
}

#[test]
fn message_matches_api_server() {
    let mut o = objects("apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad}\n").remove(0);
    apply_defaults(&mut o);
    let e = validate(&o).unwrap_err();
    assert_eq!(
        e.message,
        "Namespace \"Bad\" is invalid: metadata.name: Invalid value: \"Bad\": a lowercase RFC 1123 \
         label must consist of lower case alphanumeric characters or '-', and must start and end \
         with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation \
         is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    );
}

#[test]
fn pod_updates() {
    let base = pod(
        "  activeDeadlineSeconds: 100\n  tolerations:\n  - {key: a, operator: Exists}\n  \
         containers:\n  - name: c\n    image: i:1\n",
    );
    let now = Timestamp::UNIX_EPOCH;
    let mut old = objects(&base).remove(0);
    on_create(&mut old, None, now);
    // Image, lower deadline, added toleration: allowed.
    let mut new = old.clone();
    if let Object::Pod(p) = &mut new {
        let s = p.spec.as_mut().unwrap();
        s.containers[0].image = Some("i:2".into());
        s.active_deadline_seconds = Some(50);
        s.tolerations.as_mut().unwrap().push(Default::default());
    }
    validate_update(&old, &new).unwrap();
    // Anything else: forbidden, with the API server's message.
    let mut bad = new.clone();
    if let Object::Pod(p) = &mut bad {
        p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        p.metadata.name = Some("other".into());
    }
    let e = validate_update(&old, &bad).unwrap_err();
    let fields: Vec<&str> = e.causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["metadata.name", "spec"]);
    assert!(
        e.causes[1]
            .detail
            .starts_with("pod updates may not change fields other than `spec.containers[*].image`"),
        "{e}"
    );
    // Raising the deadline or dropping a toleration: forbidden.
    let mut bad = new.clone();
    if let Object::Pod(p) = &mut bad {
        let s = p.spec.as_mut().unwrap();
        s.active_deadline_seconds = Some(500);
        s.tolerations = None;
    }
    let e = validate_update(&old, &bad).unwrap_err();
    let fields: Vec<&str> = e.causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["spec.tolerations", "spec.activeDeadlineSeconds"]);
}

#[test]
fn immutable_config_maps() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: d}\nimmutable: true\n\
                data: {k: v}\n";
    let old = objects(text).remove(0);
    let new = objects(&text.replace("k: v", "k: w")).remove(0);
    let e = validate_update(&old, &new).unwrap_err();
    assert_eq!(e.causes[0].field, "data");
    validate_update(&old, &old).unwrap();
}

#[test]
fn cluster_fixture_decodes_defaults_and_validates() {
    let objs = objects(&fixture("cluster.yaml"));
    let kinds: Vec<Resource> = objs.iter().map(Object::resource).collect();
    assert_eq!(
        kinds,
        [Resource::Deployments, Resource::Services, Resource::Jobs]
    );
    let now = Timestamp::from_second(1_700_000_000).unwrap();
    for mut o in objs {
        on_create(&mut o, Some("default"), now);
        validate(&o).unwrap_or_else(|e| panic!("{}: {e}", o.name()));
        // Valid as an update of itself: nothing immutable changed.
        validate_update(&o, &o).unwrap();
        let v = o.to_value();
        assert_eq!(v["apiVersion"], o.resource().api_version());
    }
}

#[test]
fn cluster_kind_errors_name_their_fields() {
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  namespace: default\n\
                  spec:\n  selector:\n    matchLabels: {app: a}\n  template:\n    metadata:\n      \
                  labels: {app: b}\n    spec:\n      containers: [{name: c, image: i}]\n";
    assert_fields(deploy, &["spec.template.metadata.labels"]);
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  namespace: default\n\
               spec:\n  type: ClusterIP\n  ports: [{port: 80, nodePort: 30000}]\n";
    assert_fields(svc, &["spec.ports[0].nodePort"]);
}
