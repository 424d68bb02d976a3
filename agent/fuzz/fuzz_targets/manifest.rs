//! Fuzz the API's trust boundary for request bodies and manifest files:
//! YAML/JSON parsing, decoding with strict fields, defaulting, validation
//! and update validation. Any input may be rejected; a panic, a decode
//! error that is not a 400 or a validation error that is not a 422 with
//! causes is a finding.
#![no_main]

use herd_agent::api::defaults::{apply_defaults, on_create};
use herd_agent::api::manifest::{decode, parse_documents};
use herd_agent::api::validation::{validate, validate_update};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(docs) = parse_documents(&text, "fuzz") else {
        return;
    };
    for d in docs {
        let obj = match decode(d) {
            Ok(o) => o,
            Err(e) => {
                assert_eq!(e.code(), 400, "{e}");
                continue;
            }
        };
        let mut created = obj.clone();
        on_create(
            &mut created,
            Some("default"),
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        let mut defaulted = obj;
        apply_defaults(&mut defaulted);
        for o in [&created, &defaulted] {
            if let Err(e) = validate(o) {
                assert_eq!(e.code(), 422, "{e}");
                assert!(!e.causes.is_empty(), "{e}");
            }
        }
        let _ = validate_update(&created, &defaulted);
        decode(created.to_value()).unwrap_or_else(|e| panic!("round trip: {e}"));
    }
});
