use super::*;

/// A 1.0-shaped document: no versions, one executable resource.
const V1_0: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<LWM2M xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="LWM2M.xsd">
  <Object ObjectType="MODefinition">
    <Name>Sample</Name>
    <Description1>An object for tests.</Description1>
    <ObjectID>10241</ObjectID>
    <ObjectURN>urn:oma:lwm2m:x:10241</ObjectURN>
    <MultipleInstances>Multiple</MultipleInstances>
    <Mandatory>Optional</Mandatory>
    <Resources>
      <Item ID="0">
        <Name>Value</Name><Operations>R</Operations>
        <MultipleInstances>Single</MultipleInstances><Mandatory>Mandatory</Mandatory>
        <Type>Float</Type><RangeEnumeration>0..100</RangeEnumeration><Units>%</Units>
        <Description>A value.</Description>
      </Item>
      <Item ID="1">
        <Name>Reset</Name><Operations>E</Operations>
        <MultipleInstances>Single</MultipleInstances><Mandatory>Optional</Mandatory>
        <Type></Type><RangeEnumeration></RangeEnumeration><Units></Units>
        <Description></Description>
      </Item>
    </Resources>
    <Description2></Description2>
  </Object>
</LWM2M>"#;

/// A 1.1-shaped document: versions, a multiple unsigned resource.
const V1_1: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<LWM2M xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="LWM2M-v1_1.xsd">
  <Object ObjectType="MODefinition">
    <Name>Sample 2</Name>
    <Description1>First.</Description1>
    <ObjectID>3442</ObjectID>
    <ObjectURN>urn:oma:lwm2m:oma:3442:1.1</ObjectURN>
    <LWM2MVersion>1.1</LWM2MVersion>
    <ObjectVersion>1.1</ObjectVersion>
    <MultipleInstances>Single</MultipleInstances>
    <Mandatory>Optional</Mandatory>
    <Resources>
      <Item ID="310">
        <Name>Counts</Name><Operations>RW</Operations>
        <MultipleInstances>Multiple</MultipleInstances><Mandatory>Optional</Mandatory>
        <Type>Unsigned Integer</Type><RangeEnumeration/><Units/><Description/>
      </Item>
    </Resources>
    <Description2>Second.</Description2>
  </Object>
</LWM2M>"#;

#[test]
fn loads_both_schema_shapes() {
    let a = parse(V1_0.as_bytes()).unwrap();
    assert_eq!(a.len(), 1);
    let a = &a[0];
    assert_eq!(
        (a.id, a.name.as_str(), a.version, a.lwm2m_version),
        (10241, "Sample", Version::V1_0, Version::V1_0)
    );
    assert!(a.multiple && !a.mandatory);
    let r0 = &a.resources[&0];
    assert_eq!(
        (
            r0.kind,
            r0.operations,
            r0.mandatory,
            r0.units.as_str(),
            r0.range.as_str()
        ),
        (ResourceType::Float, Operations::Read, true, "%", "0..100")
    );
    assert_eq!(
        (a.resources[&1].kind, a.resources[&1].operations),
        (ResourceType::None, Operations::Execute)
    );

    let b = &parse(V1_1.as_bytes()).unwrap()[0];
    assert_eq!(
        (b.id, b.version, b.lwm2m_version),
        (3442, Version::V1_1, Version::V1_1)
    );
    assert_eq!(b.description, "First.\n\nSecond.");
    let r = &b.resources[&310];
    assert!(r.multiple);
    assert_eq!(
        (r.kind, r.operations),
        (ResourceType::UnsignedInteger, Operations::ReadWrite)
    );
}

fn err(xml: &str) -> DdfError {
    parse(xml.as_bytes()).unwrap_err()
}

#[test]
fn refuses_what_is_wrong_with_a_precise_reason() {
    assert!(matches!(err("not xml"), DdfError::Xml(_)));
    assert!(matches!(err("<LWM2M><Object>"), DdfError::Xml(_)));
    assert_eq!(
        err("<DDFList/>"),
        DdfError::NotAnObjectFile("DDFList".into())
    );
    assert_eq!(err("<LWM2M/>"), DdfError::NoObject);
    assert_eq!(
        err(&V1_0.replace("<ObjectID>10241</ObjectID>", "")),
        DdfError::Missing {
            context: "object".into(),
            element: "ObjectID"
        }
    );
    assert!(matches!(
        err(&V1_0.replace("<ObjectID>10241", "<ObjectID>x1")),
        DdfError::Invalid {
            element: "ObjectID",
            ..
        }
    ));
    assert!(matches!(
        err(&V1_0.replace("<ObjectID>10241", "<ObjectID>65535")),
        DdfError::Invalid {
            element: "ObjectID",
            ..
        }
    ));
    assert!(matches!(
        err(&V1_0.replace("<Item ID=\"1\">", "<Item ID=\"65535\">")),
        DdfError::Invalid {
            element: "Item ID",
            ..
        }
    ));
    assert_eq!(
        err(&V1_0.replace("<Type>Float</Type>", "<Type>Decimal</Type>")),
        DdfError::Invalid {
            context: "object 10241 resource 0".into(),
            element: "Type",
            value: "Decimal".into(),
            expected: "expected an LwM2M data type"
        }
    );
    assert!(matches!(
        err(&V1_0.replace("<Operations>R</Operations>", "<Operations>X</Operations>")),
        DdfError::Invalid {
            element: "Operations",
            ..
        }
    ));
    assert_eq!(
        err(&V1_0.replace("<Item ID=\"1\">", "<Item ID=\"0\">")),
        DdfError::DuplicateResource {
            object: 10241,
            resource: 0
        }
    );
    assert!(matches!(
        err(&V1_0.replace(
            "<Mandatory>Optional</Mandatory>\n    <Resources>",
            "<Mandatory>Maybe</Mandatory>\n    <Resources>"
        )),
        DdfError::Invalid {
            element: "Mandatory",
            ..
        }
    ));
}

#[test]
fn refuses_entities_and_oversized_input() {
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><LWM2M>&lol2;</LWM2M>"#;
    assert!(matches!(err(bomb), DdfError::Xml(_)));
    let big = vec![b' '; MAX_SIZE + 1];
    assert_eq!(
        parse(&big),
        Err(DdfError::TooLarge {
            size: MAX_SIZE + 1,
            limit: MAX_SIZE
        })
    );
    assert_eq!(parse(&[0xFF, 0xFE]), Err(DdfError::NotUtf8));
    // roxmltree parses without recursion: deep nesting costs no stack, and
    // the node limit bounds it.
    let nest = |n: usize| format!("<LWM2M>{}{}</LWM2M>", "<a>".repeat(n), "</a>".repeat(n));
    assert_eq!(err(&nest(100_000)), DdfError::NoObject);
    assert!(matches!(err(&nest(300_000)), DdfError::Xml(_)));
}
