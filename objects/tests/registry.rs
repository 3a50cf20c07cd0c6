//! The OMA LwM2M registry (DDF XML of 300+ public objects) as test data: the
//! loader must read every object file in it, and the built-in definitions
//! must agree with the registry resource by resource.
//!
//! The registry is read from `../shared/lwm2m-registry/` beside the
//! checkout, or from `LWM2M_REGISTRY_DIR`. It is not copied into this
//! repository. A missing directory fails the tests: they must not pass by
//! testing nothing.

use std::path::PathBuf;

use lwm2m_objects::model::ddf::{self, DdfError};
use lwm2m_objects::model::{core, ObjectDef};
use lwm2m_objects::{Model, Registry, Version};

fn registry_dir() -> PathBuf {
    let dir = std::env::var_os("LWM2M_REGISTRY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/lwm2m-registry")
        });
    assert!(
        dir.join("3.xml").is_file(),
        "the OMA registry is not at {} (set LWM2M_REGISTRY_DIR)",
        dir.display()
    );
    dir
}

/// Files in the registry directory that are not object definitions, with
/// the error the loader must give. Upstream is right to ship them; they are
/// simply other documents.
fn not_objects() -> Vec<(&'static str, DdfError)> {
    vec![
        // The registry's index of all objects (a <DDFList> of <Item>s with
        // URNs and links), not an object definition.
        ("DDF.xml", DdfError::NotAnObjectFile("DDFList".into())),
        // Resources for reuse across objects (the reusable_resources schema),
        // with no object id of their own.
        ("Common.xml", DdfError::ReusableResources),
        // The registry of SenML units that LwM2M adds to IANA's.
        (
            "LWM2M_senml_units.xml",
            DdfError::NotAnObjectFile("units".into()),
        ),
    ]
}

#[test]
fn every_object_file_of_the_registry_loads() {
    let dir = registry_dir();
    let mut reg = Registry::new();
    let failures = reg.load_dir(&dir).expect("registry directory is readable");
    let expected = not_objects();
    for (file, err) in &failures {
        assert!(
            expected.iter().any(|(f, e)| f == file && e == err),
            "{file} failed to load: {err}"
        );
    }
    for (file, err) in &expected {
        assert!(
            failures.iter().any(|(f, e)| f == file && e == err),
            "{file} was expected to fail with: {err}"
        );
    }
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "xml"))
        })
        .count();
    assert!(reg.len() >= 300, "only {} objects loaded", reg.len());
    assert_eq!(
        reg.len(),
        files - expected.len(),
        "one object per object file"
    );
}

#[test]
fn load_dir_answers_with_the_registry_definitions() {
    let mut reg = Registry::new();
    reg.load_dir(&registry_dir()).unwrap();
    let device = reg.object(3).expect("object 3");
    assert_eq!(device.version, Version::V1_2);
    assert_eq!(device.resources.len(), 23);
    assert_eq!(reg.resource(5, 3).map(|r| r.name.as_str()), Some("State"));
}

fn load(file: &str) -> ObjectDef {
    let bytes = std::fs::read(registry_dir().join(file)).unwrap();
    let mut defs = ddf::parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(defs.len(), 1, "{file}");
    defs.remove(0)
}

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn built_in_core_objects_agree_with_the_registry() {
    let built_in = core::definitions();
    assert_eq!(
        built_in.iter().map(|d| d.id).collect::<Vec<_>>(),
        core::IDS.to_vec()
    );
    for ours in built_in {
        let theirs = load(&format!("{}.xml", ours.id));
        let o = ours.id;
        assert_eq!(ours.name, theirs.name, "/{o} name");
        assert_eq!(ours.version, theirs.version, "/{o} version");
        assert_eq!(
            ours.lwm2m_version, theirs.lwm2m_version,
            "/{o} LwM2M version"
        );
        assert_eq!(ours.urn, theirs.urn, "/{o} URN");
        assert_eq!(ours.multiple, theirs.multiple, "/{o} multiple");
        assert_eq!(ours.mandatory, theirs.mandatory, "/{o} mandatory");
        assert_eq!(
            ours.resources.keys().collect::<Vec<_>>(),
            theirs.resources.keys().collect::<Vec<_>>(),
            "/{o} resource ids"
        );
        for (id, r) in &ours.resources {
            let t = &theirs.resources[id];
            let at = format!("/{o}/x/{id}");
            assert_eq!(words(&r.name), words(&t.name), "{at} name");
            assert_eq!(r.operations, t.operations, "{at} operations");
            assert_eq!(r.multiple, t.multiple, "{at} multiple");
            assert_eq!(r.mandatory, t.mandatory, "{at} mandatory");
            assert_eq!(r.kind, t.kind, "{at} type");
            assert_eq!(r.range, t.range, "{at} range");
            assert_eq!(r.units, t.units, "{at} units");
        }
    }
}
