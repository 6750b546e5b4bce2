//! The generated Teams app manifest validated against Microsoft's official v1.22 JSON schema (vendored under tests/data/teams), with the `boon` JSON-schema validator.

use std::io::Read;

use serde_json::{Value, json};
use switchboard::teams::{AppPackage, MANIFEST_VERSION};

const SCHEMA: &str = include_str!("data/teams/MicrosoftTeams.v1.22.schema.json");
const SCHEMA_URL: &str =
    "https://developer.microsoft.com/json-schemas/teams/v1.22/MicrosoftTeams.schema.json";

fn validate(manifest: &Value) -> Result<(), String> {
    let schema: Value = serde_json::from_str(SCHEMA).map_err(|e| e.to_string())?;
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    compiler
        .add_resource(SCHEMA_URL, schema)
        .map_err(|e| e.to_string())?;
    let index = compiler
        .compile(SCHEMA_URL, &mut schemas)
        .map_err(|e| format!("{e:#}"))?;
    schemas
        .validate(manifest, index)
        .map_err(|e| format!("{e:#}"))
}

fn package() -> AppPackage {
    AppPackage::new(
        "00000000-0000-0000-0000-0000000000a1",
        "Perks",
        "Acme Inc.",
        "https://perks.example",
        "https://perks.example/privacy",
        "https://perks.example/terms",
    )
    .valid_domain("perks.example")
}

#[test]
fn the_vendored_schema_is_the_version_the_package_declares() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    assert_eq!(
        schema["properties"]["manifestVersion"]["const"],
        MANIFEST_VERSION
    );
}

#[test]
fn the_generated_manifest_is_valid_against_the_official_schema() {
    let manifest = package().manifest().unwrap();
    validate(&manifest).unwrap_or_else(|e| panic!("invalid manifest: {e}\n{manifest:#}"));

    // The manifest inside the zip is the same document.
    let bytes = package().build().unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut text = String::new();
    zip.by_name("manifest.json")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let from_zip: Value = serde_json::from_str(&text).unwrap();
    validate(&from_zip).unwrap();
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    // So the test above can fail: break the manifest in ways the schema catches.
    let good = package().manifest().unwrap();
    let mut no_developer = good.clone();
    no_developer.as_object_mut().unwrap().remove("developer");
    assert!(validate(&no_developer).is_err());
    let mut bad_id = good.clone();
    bad_id["id"] = json!("not-a-guid");
    assert!(validate(&bad_id).is_err());
    let mut unknown = good.clone();
    unknown["notAField"] = json!(true);
    assert!(validate(&unknown).is_err());
    let mut long_name = good;
    long_name["name"]["short"] = json!("x".repeat(31));
    assert!(validate(&long_name).is_err());
}
