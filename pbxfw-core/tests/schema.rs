//! The published JSON Schema (docs/pbxfw.schema.json) names exactly the keys the validator
//! accepts: every key it lists is accepted, and the validator knows no key it does not list.

use pbxfw_core::Policy;
use serde_json::{json, Value};

fn schema() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pbxfw.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Whether validating `doc` reports an unknown key.
fn unknown_key(doc: Value) -> bool {
    match Policy::from_value(doc).validate() {
        Ok(_) => false,
        Err(d) => d.iter().any(|d| d.message.contains("not a known key")),
    }
}

#[test]
fn schema_keys_match_the_validator() {
    let s = schema();
    let props = s["properties"].as_object().unwrap();
    // Sections that are tables with fixed keys: each listed key is known, a made-up one is not.
    for section in ["settings", "pbx", "blacklist", "responsive", "fleet"] {
        for key in props[section]["properties"].as_object().unwrap().keys() {
            assert!(
                !unknown_key(json!({ section: { key: null } })),
                "{section}.{key} is in the schema but refused"
            );
        }
        assert!(
            unknown_key(json!({ section: { "no_such_key": 1 } })),
            "{section} accepts unknown keys"
        );
    }
    for section in ["networks", "custom_services", "users"] {
        for key in props[section]["items"]["properties"]
            .as_object()
            .unwrap()
            .keys()
        {
            assert!(
                !unknown_key(json!({ section: [{ key: null }] })),
                "{section}[].{key} is in the schema but refused"
            );
        }
        assert!(unknown_key(json!({ section: [{ "no_such_key": 1 }] })));
    }
    let trunk = &props["pbx"]["properties"]["trunks"]["items"]["properties"];
    for key in trunk.as_object().unwrap().keys() {
        assert!(
            !unknown_key(json!({ "pbx": { "trunks": [{ key: null }] } })),
            "trunk {key}"
        );
    }
    assert!(unknown_key(json!({ "no_such_section": {} })));
    for key in props.keys() {
        assert!(!unknown_key(json!({ key: null })), "{key}");
    }
    // Every catalogue service can be overridden, and only those.
    let names: Vec<&str> = props["services"]["propertyNames"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let catalogue: Vec<&str> = pbxfw_core::catalogue().iter().map(|e| e.name).collect();
    assert_eq!(names, catalogue);
}
