//! NetNs: error paths (no root) and create/run/delete (root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{NsGuard, root_or_skip};
use herd_net::{NetError, NetNs};

#[test]
fn open_rejects_files_that_are_not_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("plain");
    std::fs::write(&f, "x").unwrap();
    let err = NetNs::open(&f).unwrap_err();
    assert!(matches!(err, NetError::Netns { op: "open", .. }), "{err}");
    assert!(err.to_string().contains("not a namespace file"), "{err}");
    let err = NetNs::open(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(err, NetError::Netns { .. }), "{err}");
}

#[test]
fn bad_names_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["", ".", "..", "a/b", "a\0b"] {
        let err = NetNs::create(dir.path(), name).unwrap_err();
        assert!(
            matches!(err, NetError::InvalidName { .. }),
            "{name:?}: {err}"
        );
        let err = NetNs::delete(dir.path(), name).unwrap_err();
        assert!(
            matches!(err, NetError::InvalidName { .. }),
            "{name:?}: {err}"
        );
    }
    // Deleting something that never existed is fine.
    NetNs::delete(dir.path(), "never").unwrap();
}

#[test]
fn create_run_delete() {
    if !root_or_skip("create_run_delete") {
        return;
    }
    let g = NsGuard::new("hnx");
    let dir = Path::new(common::NETNS_DIR);
    // The name is taken now.
    let err = NetNs::create(dir, &g.name).unwrap_err();
    assert!(matches!(err, NetError::NetnsExists(_)), "{err}");
    // run() executes inside: a fresh netns has only lo, and a different
    // inode from ours.
    let inner = g
        .ns()
        .run(|| {
            std::fs::metadata("/proc/thread-self/ns/net").map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            })
        })
        .unwrap()
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    let ours = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    assert_ne!(inner, ours);
    assert_eq!(inner, std::fs::metadata(g.path()).unwrap().ino());
    let links = common::ip_json(&g.name, &["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 1);
    // A panic inside run() is an error, not a crash.
    let err = g.ns().run(|| panic!("boom")).map(|_: ()| ()).unwrap_err();
    assert!(matches!(err, NetError::Thread { .. }), "{err}");
    let path = g.path();
    let mut g = g;
    g.delete();
    assert!(!path.exists());
    NetNs::delete(dir, &g.name).unwrap();
}
