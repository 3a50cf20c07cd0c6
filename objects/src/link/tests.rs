use super::*;

fn link(target: &str, params: &[(&str, Option<&str>)]) -> Link {
    Link {
        target: target.to_string(),
        params: params
            .iter()
            .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
            .collect(),
    }
}

fn obj(object: u16, instance: Option<u16>, version: Option<Version>) -> ObjectLink {
    ObjectLink {
        object,
        instance,
        version,
    }
}

// ---------------------------------------------------------------- RFC 6690

/// RFC 6690 §5, the /.well-known/core examples.
#[test]
fn rfc6690_examples() {
    let text = "</sensors/temp>;if=\"sensor\",</sensors/light>;if=\"sensor\"";
    let links = parse_links(text).unwrap();
    assert_eq!(
        links,
        [
            link("/sensors/temp", &[("if", Some("sensor"))]),
            link("/sensors/light", &[("if", Some("sensor"))]),
        ]
    );
    assert_eq!(format_links(&links), text);

    let text = "</sensors>;ct=40;title=\"Sensor Index\",\
                </sensors/temp>;rt=\"temperature-c\";if=\"sensor\",\
                </sensors/light>;rt=\"light-lux\";if=\"sensor\",\
                <http://www.example.com/sensors/t123>;anchor=\"/sensors/temp\";rel=\"describedby\",\
                </t>;anchor=\"/sensors/temp\";rel=\"alternate\"";
    let links = parse_links(text).unwrap();
    assert_eq!(links.len(), 5);
    assert_eq!(
        links[0],
        link(
            "/sensors",
            &[("ct", Some("40")), ("title", Some("Sensor Index"))]
        )
    );
    assert_eq!(links[3].target, "http://www.example.com/sensors/t123");
    assert_eq!(links[3].param("rel"), Some(Some("describedby")));
    assert_eq!(links[4].param("anchor"), Some(Some("/sensors/temp")));
    // rel values are tokens, so they come back unquoted; the rest is equal.
    assert_eq!(parse_links(&format_links(&links)).unwrap(), links);
}

#[test]
fn quoted_strings_tokens_and_valueless_params() {
    let text = r#"</a>;title="x, y; z \"q\" \\";obs;ct=0 ; sz = 12 , </b>"#;
    let links = parse_links(text).unwrap();
    assert_eq!(
        links,
        [
            link(
                "/a",
                &[
                    ("title", Some(r#"x, y; z "q" \"#)),
                    ("obs", None),
                    ("ct", Some("0")),
                    ("sz", Some("12")),
                ]
            ),
            link("/b", &[]),
        ]
    );
    let out = format_links(&links);
    assert_eq!(out, r#"</a>;title="x, y; z \"q\" \\";obs;ct=0;sz=12,</b>"#);
    assert_eq!(parse_links(&out).unwrap(), links);
    assert_eq!(parse_links("").unwrap(), []);
    assert_eq!(parse_links("  ").unwrap(), []);
    // An empty value is written quoted.
    assert_eq!(
        format_links(&[link("/c", &[("x", Some(""))])]),
        "</c>;x=\"\""
    );
}

#[test]
fn rejects_bad_syntax() {
    assert_eq!(
        parse_links("</a>;title=\"open"),
        Err(LinkError::UnterminatedQuote { offset: 11 })
    );
    assert_eq!(
        parse_links("</a>;title=\"x\\"),
        Err(LinkError::UnterminatedQuote { offset: 11 })
    );
    assert_eq!(
        parse_links("</a>,</b"),
        Err(LinkError::UnterminatedTarget { offset: 5 })
    );
    for (text, offset) in [
        ("/a>", 0),
        ("</a>,", 5),
        ("</a>;", 5),
        ("</a>;=1", 5),
        ("</a> x", 5),
        ("</a>;ct=1\"2\"", 9),
        ("</a>;t=\"x\" y", 11),
    ] {
        assert!(
            matches!(parse_links(text), Err(LinkError::Syntax { offset: o, .. }) if o == offset),
            "{text:?}: {:?}",
            parse_links(text)
        );
    }
}

#[test]
fn bounds_links_and_params() {
    let many = vec!["</1>"; MAX_LINKS + 1].join(",");
    assert_eq!(
        parse_links(&many),
        Err(LinkError::TooManyLinks { limit: MAX_LINKS })
    );
    let just = vec!["</1>"; MAX_LINKS].join(",");
    assert_eq!(parse_links(&just).unwrap().len(), MAX_LINKS);
    let params = format!("</1>{}", ";a".repeat(MAX_PARAMS + 1));
    assert_eq!(
        parse_links(&params),
        Err(LinkError::TooManyParams { limit: MAX_PARAMS })
    );
    let query = vec!["pmin=1"; MAX_PARAMS + 1].join("&");
    assert_eq!(
        Attributes::parse_query(&query),
        Err(LinkError::TooManyParams { limit: MAX_PARAMS })
    );
}

// ---------------------------------------------------------------- attributes

#[test]
fn write_attributes_query() {
    let a = Attributes::parse_query("pmin=10&pmax=60&gt=20.5").unwrap();
    assert_eq!(a.pmin, Some(AttributeValue::Set(10)));
    assert_eq!(a.pmax, Some(AttributeValue::Set(60)));
    assert_eq!(a.gt, Some(AttributeValue::Set(20.5)));
    assert_eq!(a.lt, None);
    assert_eq!(a.to_query(), "pmin=10&pmax=60&gt=20.5");

    let all = "pmin&pmax=0&gt=-1.5&lt=-10&st=2&epmin=1&epmax=5&edge=1&con=0&hqmax=32";
    let a = Attributes::parse_query(&format!("?{all}")).unwrap();
    assert_eq!(a.pmin, Some(AttributeValue::Unset));
    assert_eq!(a.edge, Some(AttributeValue::Set(true)));
    assert_eq!(a.con, Some(AttributeValue::Set(false)));
    assert_eq!(a.hqmax, Some(AttributeValue::Set(32)));
    assert_eq!(a.to_query(), all);
    assert_eq!(Attributes::parse_query("").unwrap(), Attributes::default());
    assert!(Attributes::parse_query("").unwrap().is_empty());
    // Uri-Query options one by one.
    assert_eq!(
        Attributes::from_query_params(["pmin=1", "lt"]).unwrap().lt,
        Some(AttributeValue::Unset)
    );
}

#[test]
fn rejects_bad_attributes() {
    use AttributeError as E;
    let cases: &[(&str, AttributeError)] = &[
        (
            "pmin=-1",
            E::Malformed {
                name: "pmin".into(),
                value: "-1".into(),
            },
        ),
        (
            "pmin=1.5",
            E::Malformed {
                name: "pmin".into(),
                value: "1.5".into(),
            },
        ),
        (
            "pmin=",
            E::Malformed {
                name: "pmin".into(),
                value: "".into(),
            },
        ),
        (
            "pmax=4294967296",
            E::Malformed {
                name: "pmax".into(),
                value: "4294967296".into(),
            },
        ),
        (
            "gt=abc",
            E::Malformed {
                name: "gt".into(),
                value: "abc".into(),
            },
        ),
        (
            "gt=inf",
            E::Malformed {
                name: "gt".into(),
                value: "inf".into(),
            },
        ),
        (
            "gt=NaN",
            E::Malformed {
                name: "gt".into(),
                value: "NaN".into(),
            },
        ),
        (
            "lt=1e999",
            E::Malformed {
                name: "lt".into(),
                value: "1e999".into(),
            },
        ),
        (
            "st=.",
            E::Malformed {
                name: "st".into(),
                value: ".".into(),
            },
        ),
        (
            "edge=2",
            E::Malformed {
                name: "edge".into(),
                value: "2".into(),
            },
        ),
        (
            "con=true",
            E::Malformed {
                name: "con".into(),
                value: "true".into(),
            },
        ),
        ("foo=1", E::Unknown("foo".into())),
        ("pmin=1&pmin=2", E::Duplicate("pmin".into())),
        ("dim=3", E::NotWritable("dim".into())),
        ("ver=1.0", E::NotWritable("ver".into())),
        ("lt=20&gt=20", E::LtNotBelowGt),
        ("lt=30&gt=20", E::LtNotBelowGt),
        ("lt=10&gt=20&st=5", E::StepTooLarge),
        ("st=-1", E::NegativeStep),
        ("epmin=10&epmax=10", E::EpminNotBelowEpmax),
    ];
    for (q, e) in cases {
        assert_eq!(
            Attributes::parse_query(q),
            Err(LinkError::Attribute(e.clone())),
            "{q}"
        );
    }
    // Allowed: lt + 2*st just below gt, a valueless lt with gt, pmax < pmin.
    assert!(Attributes::parse_query("lt=10&gt=20&st=4.9").is_ok());
    assert!(Attributes::parse_query("lt&gt=20&st=100").is_ok());
    assert!(Attributes::parse_query("pmin=60&pmax=10").is_ok());
}

// ---------------------------------------------------------------- discover

#[test]
fn discover_response() {
    let text = "</3>;ver=1.1,</3/0>;pmin=10,</3/0/1>,</3/0/7>;dim=8";
    let entries = parse_discover(text, "/").unwrap();
    let at = |p: &str| -> DiscoverEntry {
        DiscoverEntry {
            path: p.parse().unwrap(),
            attributes: Attributes::default(),
        }
    };
    let mut want = vec![at("/3"), at("/3/0"), at("/3/0/1"), at("/3/0/7")];
    want[0].attributes.ver = Some(Version::V1_1);
    want[1].attributes.pmin = Some(AttributeValue::Set(10));
    want[3].attributes.dim = Some(8);
    assert_eq!(entries, want);
    assert_eq!(format_discover(&entries), text);

    // Bootstrap-Discover: root link with lwm2m=, ssid and uri on /0 instances.
    let bs =
        "</>;lwm2m=1.1,</0/0>;ssid=101;uri=\"coaps://dm.example.com:5684\",</1>,</1/0>;ssid=101";
    let entries = parse_discover(bs, "/").unwrap();
    assert_eq!(entries[0].path, Path::ROOT);
    assert_eq!(
        entries[0].attributes.other,
        [("lwm2m".to_string(), Some("1.1".to_string()))]
    );
    assert_eq!(entries[1].attributes.ssid, Some(101));
    assert_eq!(
        entries[1].attributes.uri.as_deref(),
        Some("coaps://dm.example.com:5684")
    );
    assert_eq!(format_discover(&entries), bs);

    // An alternate root path is stripped.
    let alt = parse_discover("</lwm2m/3/0>;pmax=60", "/lwm2m").unwrap();
    assert_eq!(alt[0].path, Path::instance(3, 0));
    assert_eq!(alt[0].attributes.pmax, Some(AttributeValue::Set(60)));

    // Discover keeps what the device reports, even inconsistent values...
    let odd = parse_discover("</3/0/9>;lt=50;gt=10", "/").unwrap();
    assert_eq!(
        odd[0].attributes.validate(),
        Err(AttributeError::LtNotBelowGt)
    );
    // ...but not malformed ones.
    assert_eq!(
        parse_discover("</3/0/7>;dim=x", "/"),
        Err(LinkError::Attribute(AttributeError::Malformed {
            name: "dim".into(),
            value: "x".into()
        }))
    );
    assert_eq!(
        parse_discover("</3/0/7>;dim", "/"),
        Err(LinkError::Attribute(AttributeError::MissingValue(
            "dim".into()
        )))
    );
    assert_eq!(
        parse_discover("</3>;ver=one", "/"),
        Err(LinkError::Attribute(AttributeError::Malformed {
            name: "ver".into(),
            value: "one".into()
        }))
    );
    assert_eq!(
        parse_discover("</3/x>", "/"),
        Err(LinkError::Path(PathError::NotANumber("x".into())))
    );
}

// ---------------------------------------------------------------- registration

fn reg(text: &str) -> RegistrationPayload {
    RegistrationPayload::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn registration_round_trip() {
    let text = "</>;rt=\"oma.lwm2m\";ct=\"110 112\",</1>;ver=1.1,</1/0>,</3/0>";
    let p = reg(text);
    assert_eq!(
        p,
        RegistrationPayload {
            root_path: "/".into(),
            content_formats: vec![110, 112],
            objects: vec![
                obj(1, None, Some(Version::V1_1)),
                obj(1, Some(0), None),
                obj(3, Some(0), None),
            ],
        }
    );
    assert_eq!(p.format(), text);
    assert_eq!(p.object_version(1), Some(Version::V1_1));
    assert_eq!(p.object_version(3), None);
    assert_eq!(p.instances(1).collect::<Vec<_>>(), [0]);
    assert!(p.lists_security_objects().is_empty());

    let minimal = RegistrationPayload {
        objects: vec![obj(3, Some(0), None)],
        ..Default::default()
    };
    assert_eq!(minimal.format(), "</>;rt=\"oma.lwm2m\",</3/0>");
    assert_eq!(reg(&minimal.format()), minimal);
}

#[test]
fn registration_alternate_root_path() {
    let text = "</lwm2m>;rt=\"oma.lwm2m\";ct=112,</lwm2m/1/0>,</lwm2m/3>;ver=1.2,</lwm2m/3/0>";
    let p = reg(text);
    assert_eq!(p.root_path, "/lwm2m");
    assert_eq!(p.content_formats, [112]);
    assert_eq!(
        p.objects,
        [
            obj(1, Some(0), None),
            obj(3, None, Some(Version::V1_2)),
            obj(3, Some(0), None)
        ]
    );
    assert_eq!(p.format(), text);
    assert_eq!(reg("</a/b/>;rt=\"oma.lwm2m\"").root_path, "/a/b");
    for bad in [
        "</lwm2m/1>;rt=\"oma.lwm2m\"",
        "</1>;rt=\"oma.lwm2m\"",
        "<lwm2m>;rt=\"oma.lwm2m\"",
        "<//x>;rt=\"oma.lwm2m\"",
    ] {
        assert!(
            matches!(RegistrationPayload::parse(bad), Err(LinkError::RootPath(_))),
            "{bad}"
        );
    }
    assert_eq!(
        RegistrationPayload::parse("</a>;rt=\"oma.lwm2m\",</b>;rt=\"oma.lwm2m\""),
        Err(LinkError::DuplicateRoot)
    );
}

/// Register payloads real devices send (module-quirks.md).
#[test]
fn registration_quirks() {
    // Murata: ct repeated, no rt (Leshan issue 1229).
    let murata = reg("</>;ct=110;ct=112,</1/0>,</2>,</3/0>,</4/0>,</5/0>,</7/0>,</15/0>,</16/0>");
    assert_eq!(murata.root_path, "/");
    assert_eq!(murata.content_formats, [110, 112]);
    assert_eq!(
        murata.objects,
        [
            obj(1, Some(0), None),
            obj(2, None, None),
            obj(3, Some(0), None),
            obj(4, Some(0), None),
            obj(5, Some(0), None),
            obj(7, Some(0), None),
            obj(15, Some(0), None),
            obj(16, Some(0), None),
        ]
    );
    // Zephyr builds: one unquoted ct, or rt plus the old JSON format.
    assert_eq!(reg("</>;ct=112,</1/0>").content_formats, [112]);
    let zephyr_json = reg("</>;rt=\"oma.lwm2m\";ct=11543,</1/0>,</3/0>");
    assert_eq!(zephyr_json.content_formats, [11543]);
    assert_eq!(zephyr_json.objects.len(), 2);
    // TLV-only Zephyr builds send no root link at all.
    let bare = reg("</1/0>,</3/0>,</5/0>");
    assert_eq!(bare.root_path, "/");
    assert!(bare.content_formats.is_empty());
    assert_eq!(bare.objects.len(), 3);
    // Quoted list, and an old client's unquoted list with a space.
    assert_eq!(reg("</>;ct=\"60 110 112\"").content_formats, [60, 110, 112]);
    assert_eq!(reg("</>;ct=110 112").content_formats, [110, 112]);
    // Unknown parameters, unknown objects and non-object links.
    let odd =
        reg("</>;rt=\"oma.lwm2m\";hb;foo=\"bar\",</33629/0>;x=1,</rd>,</3442>;ver=1.0, </3/0>");
    assert_eq!(
        odd.objects,
        [
            obj(33629, Some(0), None),
            obj(3442, None, Some(Version::V1_0)),
            obj(3, Some(0), None)
        ]
    );
    // Security and OSCORE are kept but flagged.
    let sec = reg("</0/0>,</0/1>,</21/0>,</1/0>");
    assert_eq!(sec.objects.len(), 4);
    assert_eq!(sec.lists_security_objects(), [0, 21]);
    // Deeper links are ignored; repeated links are kept once.
    let deep = reg("</3/0/1>,</3/0/1/2>,</3/0>,</3/0>");
    assert_eq!(deep.objects, [obj(3, Some(0), None)]);
    // ver on an instance link is not an object version.
    assert_eq!(reg("</3/0>;ver=1.1").object_version(3), None);
}

#[test]
fn registration_rejects() {
    assert!(matches!(
        RegistrationPayload::parse("</>;ct=abc"),
        Err(LinkError::ContentFormat(_))
    ));
    assert!(matches!(
        RegistrationPayload::parse("</>;ct=\"110 70000\""),
        Err(LinkError::ContentFormat(_))
    ));
    assert_eq!(
        RegistrationPayload::parse("</65535/0>"),
        Err(LinkError::Path(PathError::OutOfRange(65535)))
    );
    assert!(matches!(
        RegistrationPayload::parse("</3>;ver=x"),
        Err(LinkError::Attribute(AttributeError::Malformed { .. }))
    ));
    assert!(matches!(
        RegistrationPayload::parse("</1/0"),
        Err(LinkError::UnterminatedTarget { .. })
    ));
    assert!(matches!(
        RegistrationPayload::parse("</>;rt=\"oma.lwm2m"),
        Err(LinkError::UnterminatedQuote { .. })
    ));
}
