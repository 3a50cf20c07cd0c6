use super::*;

const SAMPLE: &str = include_str!("../../profiles/mixed-nbiot.toml");

fn parse(text: &str) -> Result<Profile, ProfileError> {
    Profile::from_toml(text)
}

fn err(text: &str) -> ProfileError {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn the_sample_profile_parses() {
    let p = parse(SAMPLE).expect("sample");
    assert_eq!(p.name(), Some("mixed-nbiot"));
    assert_eq!(p.seed(), 20_240_601);
    assert_eq!(p.count(), Some(2000));
    assert_eq!(p.prefix(), Some("nbiot-"));
    assert_eq!(p.start_rate(), Some(200));
    let cells = p.cells(Duration::from_secs(2));
    assert_eq!(cells.len(), 40);
    assert_eq!(cells[0].id(), 0x01A2_B300);
    assert!(cells.iter().all(|c| c.is_limited()));
}

#[test]
fn an_empty_profile_is_the_default_device() {
    let p = parse("").expect("empty");
    assert_eq!(p.seed(), DEFAULT_SEED);
    let d = p.device(0);
    let default = DeviceProfile::default();
    assert_eq!(d.device.manufacturer, default.manufacturer);
    assert_eq!(d.device.radio.bearer, 7);
    assert_eq!((d.lifetime, d.queue_mode, d.roaming), (300, false, false));
    assert!(d.link(&p.cells(Duration::from_secs(2))).is_none());
    assert_eq!(d.device.battery.drain_pct_per_h, None);
}

#[test]
fn each_kind_of_malformed_profile_gets_its_error() {
    let syntax = |text: &str, needle: &str| match err(text) {
        e @ ProfileError::Syntax { line, .. } => {
            assert!(line >= 1, "{text}: no line");
            let shown = e.to_string();
            assert!(shown.contains(needle), "{shown:?} lacks {needle:?}")
        }
        other => panic!("{text}: {other:?}"),
    };
    syntax("seed = ", "");
    syntax("sed = 1", "sed");
    assert!(matches!(
        err("name = \"x\"\n\n[battery]\nlevel = 5"),
        ProfileError::Syntax {
            line: 4,
            column: 1,
            ..
        }
    ));
    syntax(
        "[[model]]\nmanufacturer = \"a\"\nmodel = \"b\"\nweigth = 2",
        "weigth",
    );
    syntax(
        "[[model]]\nmanufacturer = \"a\"\nmodel = \"b\"\nweight = \"x\"",
        "weight",
    );
    syntax("[link]\nloss_up = [0.1, 0.2, 0.3]", "loss_up");
    syntax("[link]\nlatency_ms = \"fast\"", "number or a range");
    syntax("seed = -1", "seed");

    let model = |w: &str| format!("[[model]]\nmanufacturer = \"a\"\nmodel = \"b\"\nweight = {w}");
    for w in ["0", "-1", "nan", "inf"] {
        assert!(
            matches!(err(&model(w)), ProfileError::Weight { field, .. } if field == "model[1].weight"),
            "{w}"
        );
    }
    let fw = "[[model]]\nmanufacturer = \"a\"\nmodel = \"b\"\nfirmware = [{ version = \"1\" }, { version = \"2\", weight = 0 }]";
    assert!(
        matches!(err(fw), ProfileError::Weight { field, .. } if field == "model[1].firmware[2].weight")
    );

    assert!(matches!(
        err("[network]\nroaming_share = 1.5"),
        ProfileError::Fraction { field, .. } if field == "network.roaming_share"
    ));
    assert!(matches!(
        err("[link]\nloss_up = 2"),
        ProfileError::Fraction { field, .. } if field == "link.loss_up"
    ));
    assert!(matches!(
        err("[[bearer]]\nkind = \"nb-iot\"\nloss_down = -0.1"),
        ProfileError::Fraction { field, .. } if field == "bearer[1].loss_down"
    ));
    assert!(matches!(
        err("[link]\nloss_up = [0.5, 0.1]"),
        ProfileError::Unordered { field, .. } if field == "link.loss_up"
    ));
    assert!(matches!(
        err("[[schedule]]\nlifetime_s = [600, 300]"),
        ProfileError::Unordered { field, .. } if field == "schedule[1].lifetime_s"
    ));
    assert!(matches!(
        err("[battery]\nlevel_pct = [90, 10]"),
        ProfileError::Unordered { .. }
    ));

    let bounds = |text: &str, want: &str| match err(text) {
        ProfileError::OutOfBounds { field, .. } => assert_eq!(field, want, "{text}"),
        other => panic!("{text}: {other:?}"),
    };
    bounds("[[schedule]]\nlifetime_s = 0", "schedule[1].lifetime_s");
    bounds(
        "[[schedule]]\nqueue_mode = true\nsleep_s = 1e9",
        "schedule[1].sleep_s",
    );
    bounds(
        "[[schedule]]\nqueue_mode = true\nawake_s = 0",
        "schedule[1].awake_s",
    );
    bounds("[[schedule]]\njitter = 1.5", "schedule[1].jitter");
    bounds(
        "[[region]]\nlatitude = 100\nlongitude = 0",
        "region[1].latitude",
    );
    bounds(
        "[[region]]\nlatitude = 0\nlongitude = 0\nradius_m = -5",
        "region[1].radius_m",
    );
    bounds("[link]\nlatency_ms = [0, 100000]", "link.latency_ms");
    bounds("[battery]\nlevel_pct = 120", "battery.level_pct");
    bounds("[cells]\nper_region = 0", "cells.per_region");
    bounds("[cells]\nfirst_id = 0x10000000", "cells.first_id");
    bounds(
        "[cells]\ndownlink_bytes_per_s = 0",
        "cells.downlink_bytes_per_s",
    );
    bounds("[reboot]\nmean_between_s = 0", "reboot.mean_between_s");
    bounds("[network]\nhome_mcc = 1000", "network.home_mcc");
    bounds("count = 0", "count");
    bounds(
        "[[model]]\nmanufacturer = \"a\"\nmodel = \"b\"\ndownload_retries = 21",
        "model[1].download_retries",
    );

    assert!(matches!(
        err("[[schedule]]\nawake_s = 10"),
        ProfileError::Invalid { field, .. } if field == "schedule[1].awake_s"
    ));
    assert!(matches!(
        err("[[model]]\nmanufacturer = \"\"\nmodel = \"b\""),
        ProfileError::Invalid { field, .. } if field == "model[1].manufacturer"
    ));
    assert!(matches!(
        err("prefix = \"a b\""),
        ProfileError::Invalid { .. }
    ));

    let many: String = (0..=MAX_ENTRIES)
        .map(|k| format!("[[model]]\nmanufacturer = \"m{k}\"\nmodel = \"x\"\n"))
        .collect();
    assert!(matches!(
        err(&many),
        ProfileError::TooMany { field, len, .. } if field == "model" && len == MAX_ENTRIES + 1
    ));
    let regions: String = (0..20)
        .map(|_| "[[region]]\nlatitude = 0\nlongitude = 0\n")
        .collect();
    assert!(matches!(
        err(&format!("{regions}[cells]\nper_region = 10000")),
        ProfileError::TooMany { .. }
    ));

    assert!(matches!(
        err("[network]\nroaming_share = 0.2"),
        ProfileError::Empty { .. }
    ));
    for bad in ["\"carrier-pigeon\"", "99", "-1"] {
        assert!(
            matches!(err(&format!("[[bearer]]\nkind = {bad}")), ProfileError::Bearer { field, .. } if field == "bearer[1].kind"),
            "{bad}"
        );
    }
    assert!(matches!(
        err("[[bearer]]\nkind = 7\navailable = [7, \"nope\"]"),
        ProfileError::Bearer { field, .. } if field == "bearer[1].available"
    ));

    let huge = format!("# {}\n", "x".repeat(MAX_FILE_BYTES as usize));
    assert!(matches!(err(&huge), ProfileError::TooLarge { .. }));
}

#[test]
fn files_are_read_with_their_errors_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    assert!(matches!(
        Profile::load(&missing),
        Err(ProfileError::Read { .. })
    ));
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 10]).expect("write");
    assert!(matches!(
        Profile::load(&big),
        Err(ProfileError::TooLarge { .. })
    ));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, [0xff, 0xfe, 0x00]).expect("write");
    assert!(matches!(
        Profile::load(&bad),
        Err(ProfileError::Read { .. })
    ));
    let good = dir.path().join("good.toml");
    std::fs::write(&good, SAMPLE).expect("write");
    assert_eq!(Profile::load(&good).expect("load").count(), Some(2000));
}

#[test]
fn one_seed_gives_one_fleet() {
    let a = parse(SAMPLE).expect("sample");
    let b = parse(SAMPLE).expect("sample");
    for i in (0..1000).chain([123_456, 9_999_999]) {
        assert_eq!(
            format!("{:?}", a.device(i)),
            format!("{:?}", b.device(i)),
            "device {i}"
        );
    }
    let other = parse(&SAMPLE.replace("seed = 20240601", "seed = 7")).expect("other seed");
    let same = (0..100)
        .filter(|i| format!("{:?}", a.device(*i)) == format!("{:?}", other.device(*i)))
        .count();
    assert_eq!(same, 0, "another seed, another fleet");
    // Devices differ from each other.
    assert_ne!(a.device(0).device.seed, a.device(1).device.seed);
}

/// Within `tolerance` of `share` of `n`.
fn near(count: usize, n: usize, share: f64, tolerance: f64, what: &str) {
    let got = count as f64 / n as f64;
    assert!(
        (got - share).abs() <= tolerance,
        "{what}: {got:.4} of {n}, expected {share} ± {tolerance}"
    );
}

#[test]
fn ten_thousand_devices_follow_the_mix() {
    let p = parse(SAMPLE).expect("sample");
    let n = 10_000;
    let devices: Vec<DeviceSetup> = (0..n).map(|i| p.device(i)).collect();
    let count = |f: &dyn Fn(&DeviceSetup) -> bool| devices.iter().filter(|d| f(d)).count();

    near(
        count(&|d| d.device.model == "WM-NB2"),
        n,
        0.6,
        0.02,
        "WM-NB2",
    );
    near(
        count(&|d| d.device.model == "TW-200"),
        n,
        0.3,
        0.02,
        "TW-200",
    );
    near(
        count(&|d| d.device.model == "SL-GW"),
        n,
        0.1,
        0.015,
        "SL-GW",
    );
    let meters: Vec<&DeviceSetup> = devices
        .iter()
        .filter(|d| d.device.model == "WM-NB2")
        .collect();
    let latest = meters
        .iter()
        .filter(|d| d.device.firmware_version == "2.4.1")
        .count();
    near(latest, meters.len(), 0.7, 0.03, "WM-NB2 on 2.4.1");
    assert!(meters
        .iter()
        .all(|d| d.device.manufacturer == "Acme Metering"
            && d.device.hardware_version == "rev-C"
            && d.device.position.speed_mps == (0.0, 0.0)));

    near(count(&|d| d.schedule == "psm"), n, 0.6, 0.02, "psm");
    near(count(&|d| d.queue_mode), n, 0.9, 0.015, "queue mode");
    for d in &devices {
        match d.schedule.as_str() {
            "psm" => {
                assert!((3600..=86400).contains(&d.lifetime), "{}", d.lifetime);
                let s = d.sleep_duration.as_secs_f64();
                assert!((900.0 * 0.7..=900.0 * 1.3).contains(&s), "{s}");
                assert_eq!(d.sleep_jitter, 0.3);
                assert!(d.rebind_on_wake);
            }
            "edrx" => {
                assert_eq!(d.lifetime, 3600);
                let a = d.awake_window.as_secs_f64();
                assert!((18.0..=22.0).contains(&a), "{a}");
            }
            "always-on" => assert!(!d.queue_mode && d.lifetime == 300),
            other => panic!("schedule {other}"),
        }
    }
    let psm_lifetimes: Vec<u32> = devices
        .iter()
        .filter(|d| d.schedule == "psm")
        .map(|d| d.lifetime)
        .collect();
    let mean =
        psm_lifetimes.iter().map(|l| f64::from(*l)).sum::<f64>() / psm_lifetimes.len() as f64;
    assert!(
        (mean - 45_000.0).abs() < 1500.0,
        "lifetimes uniform over the range: mean {mean}"
    );

    near(
        count(&|d| d.device.radio.bearer == 7),
        n,
        0.7,
        0.02,
        "NB-IoT",
    );
    near(
        count(&|d| d.device.radio.bearer == 6),
        n,
        0.2,
        0.02,
        "LTE-M",
    );
    near(
        count(&|d| d.device.radio.bearer == 21),
        n,
        0.1,
        0.015,
        "Wi-Fi",
    );
    let cellular: Vec<&DeviceSetup> = devices
        .iter()
        .filter(|d| d.device.radio.bearer != 21)
        .collect();
    let roaming: Vec<&&DeviceSetup> = cellular.iter().filter(|d| d.roaming).collect();
    near(roaming.len(), cellular.len(), 0.1, 0.015, "roaming");
    let france = roaming
        .iter()
        .filter(|d| {
            d.device
                .radio
                .cellular
                .as_ref()
                .is_some_and(|c| c.mcc == 208)
        })
        .count();
    near(france, roaming.len(), 2.0 / 3.0, 0.05, "roaming in France");
    for d in &devices {
        let r = &d.device.radio;
        match (&r.cellular, d.roaming) {
            (None, _) => {
                assert_eq!(r.bearer, 21);
                assert!(d.cell.is_none() && !d.roaming);
                assert!((-80..=-45).contains(&r.rssi_dbm));
            }
            (Some(c), false) => assert_eq!((c.mcc, c.mnc), (262, 1)),
            (Some(c), true) => assert!(matches!((c.mcc, c.mnc), (208, 1) | (222, 10))),
        }
        if let (Some(c), Some(k)) = (&r.cellular, d.cell) {
            assert!(k < 40);
            assert_eq!(c.cell_id, 0x01A2_B300 + k as u32);
            assert_eq!(c.apn, "iot.acme.example");
        }
        if r.bearer == 7 {
            assert!((-128..=-85).contains(&r.rssi_dbm));
            assert_eq!(r.available, vec![7, 6]);
            assert!(
                d.latency.0 == Duration::from_millis(300)
                    && d.latency.1 == Duration::from_millis(1500)
            );
            assert!((0.0..=0.03).contains(&d.loss_up));
        }
        if r.bearer == 6 {
            // No link settings of its own: the profile's.
            assert_eq!(d.loss_up, 0.01);
            assert_eq!(d.latency.1, Duration::from_millis(200));
        }
        let b = &d.device.battery;
        assert!((20..=100).contains(&b.level));
        assert!(b.drain_pct_per_h.is_some_and(|r| (0.05..=0.5).contains(&r)));
        let mean = d.reboot_mean.expect("reboots").as_secs_f64();
        assert!((21_600.0..=172_800.0).contains(&mean));
    }
    // Positions lie within their region's radius, and both regions are used 3:2.
    let berlin = devices
        .iter()
        .filter(|d| {
            let at = &d.device.position;
            let (lat, lon, radius) = at.area.expect("a region");
            let north = (at.latitude - lat) * 111_320.0;
            let east = (at.longitude - lon) * 111_320.0 * lat.to_radians().cos();
            assert!(north.hypot(east) <= radius + 1.0);
            (lat - 52.52).abs() < 1e-9
        })
        .count();
    near(berlin, n, 0.6, 0.02, "Berlin");
    let in_berlin_cells = devices
        .iter()
        .filter(|d| (d.device.position.latitude - 52.52).abs() < 1.0)
        .filter_map(|d| d.cell)
        .all(|k| k < 20);
    assert!(
        in_berlin_cells,
        "a device camps on a cell of its own region"
    );
}

#[test]
fn a_setup_lands_in_the_config() {
    let p = parse(SAMPLE).expect("sample");
    let cells = p.cells(Duration::from_secs(2));
    let i = (0..100)
        .find(|i| p.device(*i).device.radio.bearer == 7)
        .expect("an NB-IoT device");
    let d = p.device(i);
    let mut c = Config::new("127.0.0.1:5683".parse().expect("addr"), "x");
    c.profile.update_time = Duration::from_millis(5);
    d.apply(&mut c, &cells);
    assert_eq!(c.profile.model, d.device.model);
    assert_eq!(
        c.profile.update_time,
        Duration::from_millis(5),
        "kept from the template"
    );
    assert_eq!((c.lifetime, c.queue_mode), (d.lifetime, d.queue_mode));
    let link = c.link.expect("NB-IoT has link conditions");
    let cell = link.cell.expect("in a cell");
    assert!(Arc::ptr_eq(&cell, &cells[d.cell.expect("cell")]));
    assert_eq!(c.reboot_mean, d.reboot_mean);
}

#[test]
fn a_models_download_retries_reach_its_devices_only() {
    let p = parse(
        "[[model]]\nmanufacturer = \"Z\"\nmodel = \"zephyr-like\"\ndownload_retries = 0\n\
         [[model]]\nmanufacturer = \"R\"\nmodel = \"resuming\"\n",
    )
    .expect("profile");
    let retries_of = |model: &str| {
        let i = (0..100)
            .find(|i| p.device(*i).device.model == model)
            .expect("a device of the model");
        let mut c = Config::new("127.0.0.1:5683".parse().expect("addr"), "x");
        p.device(i).apply(&mut c, &[]);
        c.firmware.retries
    };
    assert_eq!(retries_of("zephyr-like"), 0);
    assert_eq!(
        retries_of("resuming"),
        crate::FirmwareConfig::default().retries,
        "a model without the key keeps the default"
    );
}
