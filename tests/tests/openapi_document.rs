//! `docs/openapi.json` (what `GET /v1/openapi.json` serves; control-plane/src/api/openapi) is a
//! valid OpenAPI 3.1 document by the specification's own schema, checked with
//! openapi-spec-validator (PyPI, in the Makefile's TEST_TOOLS), and the check is not a formality:
//! broken copies of the document are refused.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use tollgate_integration_tests::paths::repo_root;
use tollgate_integration_tests::tools::program;

fn validate(document: &Path) -> Output {
    Command::new(program("openapi-spec-validator"))
        .arg(document)
        .output()
        .expect("openapi-spec-validator starts")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_api_description_is_valid_openapi_3_1() {
    let document = repo_root().join("docs/openapi.json");
    let output = validate(&document);
    assert!(output.status.success(), "{}", text(&output));
    let parsed: Value = serde_json::from_slice(&std::fs::read(&document).unwrap()).unwrap();
    assert_eq!(parsed["openapi"], "3.1.0");
}

#[test]
fn broken_descriptions_are_refused() {
    let original: Value =
        serde_json::from_slice(&std::fs::read(repo_root().join("docs/openapi.json")).unwrap())
            .unwrap();
    type Break = fn(&mut Value);
    let breaks: [(&str, Break); 4] = [
        ("a response without its description", |d| {
            d["paths"]["/healthz"]["get"]["responses"]["200"]
                .as_object_mut()
                .unwrap()
                .remove("description");
        }),
        ("a path parameter that is not required", |d| {
            d["paths"]["/v1/keys/{key_id}"]["get"]["parameters"][0]["required"] = false.into();
        }),
        ("a parameter in an unknown place", |d| {
            d["paths"]["/v1/requests"]["get"]["parameters"][0]["in"] = "body".into();
        }),
        ("no info", |d| {
            d.as_object_mut().unwrap().remove("info");
        }),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, change) in breaks {
        let mut broken = original.clone();
        change(&mut broken);
        let file = dir.path().join("broken.json");
        std::fs::write(&file, serde_json::to_vec(&broken).unwrap()).unwrap();
        let output = validate(&file);
        assert!(
            !output.status.success(),
            "{what}: accepted\n{}",
            text(&output)
        );
    }
}
