//! Dynamic-group filters: CEL expressions over a device's attributes.
//!
//! ```text
//! model == "BG95" && version_lt(firmware, "2.1.0") && region in ["eu-west"] && !roaming
//! ```
//!
//! # Variables
//!
//! | variable | type | from |
//! | --- | --- | --- |
//! | `endpoint` | string | registration |
//! | `manufacturer`, `model`, `serial`, `firmware`, `hardware`, `software`, `device_type` | string | /3/0/0, 1, 2, 3, 18, 19, 17 |
//! | `lwm2m_version` | string | registration, e.g. "1.1" |
//! | `objects` | list of int | supported object ids |
//! | `protocols` | list of int | /5/0/8: 0 CoAP, 1 CoAPS, 2 HTTP, 3 HTTPS, 4 CoAP/TCP, 5 CoAP/TLS |
//! | `delivery` | int | /5/0/9: 0 pull, 1 push, 2 both |
//! | `online`, `awake`, `queue_mode` | bool | session |
//! | `next_wake`, `last_seen` | int | Unix milliseconds |
//! | `bearer` | string | kind of /4/0/0: "cellular", "wifi", "wired", "other" |
//! | `bearer_code` | int | /4/0/0 |
//! | `has_wifi` | bool | /4/0/1 lists WLAN, or /4/0/0 is WLAN |
//! | `signal` | int | /4/0/2, dBm |
//! | `link_quality`, `cell_id` | int | /4/0/3, /4/0/8 |
//! | `mcc`, `mnc` | int | /4/0/10 SMCC, /4/0/9 SMNC |
//! | `roaming` | bool | serving network is not a home network (false when unknown) |
//! | `lat`, `lon` | double | /6/0/0, /6/0/1 |
//! | `region` | string | first operator region containing the location |
//! | `battery` | int | /3/0/9, percent |
//! | `on_mains` | bool | a DC, PoE, USB or AC source is available |
//! | `billing`, `rate_plan` | string | operator |
//! | `labels` | map string → string | operator |
//!
//! An unknown scalar is `null`; unknown lists and maps are empty.
//!
//! # Functions
//!
//! `version_lt`, `version_le`, `version_gt`, `version_ge`, `version_eq`
//! (string, string) → bool compare firmware versions as
//! [`crate::versions`] does, and are `false` when either side is not a string
//! (`null` included). Of the standard library: the operators, `in`, `size`,
//! `contains`, `startsWith`, `endsWith`, the conversions `int`, `uint`,
//! `double`, `string`, `bool`, `dyn`, `type`, and the macros `has`, `all`,
//! `exists`, `exists_one`, `map`, `filter`. Regular expressions (`matches`)
//! are not available: a pattern would be compiled at every evaluation.
//!
//! # Unknown values and errors
//!
//! A filter matches a device when it evaluates to `true`. Anything else —
//! `false`, a value that is not a bool, or an evaluation error — does not
//! match. So `battery < 20` does not match a device of unknown battery (CEL
//! has no `null < int`, an error), and neither does `!(battery < 20)`; write
//! `battery == null || battery >= 20` to include unknowns. `&&` and `||`
//! absorb errors as CEL specifies: `false && (battery < 20)` is `false`,
//! `true || (battery < 20)` is `true`.
//!
//! # Compile-time checks
//!
//! Unknown variables and functions are refused when the filter is compiled,
//! with the position of the first one, and so are filters longer than
//! [`MAX_SOURCE`] bytes, nested deeper than cel can parse or evaluate safely,
//! or whose comprehensions could cost more than [`MAX_COST`] steps per device.

mod check;
mod env;
mod guard;
mod vars;

use std::collections::BTreeSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cel::{Context, ExecutionError, Program, Value};

pub use check::{MAX_COST, MAX_EVAL_DEPTH};
pub use env::VERSION_FUNCTIONS;
pub use guard::{MAX_CHAIN, MAX_NESTING, MAX_SOURCE};

use crate::attributes::Attributes;
use crate::changed::{Attr, Changed};

/// Stack of the thread that parses: enough for the bounds [`guard`] sets in
/// an unoptimised build, where ANTLR's frames are largest. Only touched
/// pages are committed.
const PARSE_STACK: usize = 64 << 20;

/// Every function name a filter may call, as cel's tree spells them.
const FUNCTIONS: &[&str] = &[
    "_?_:_",
    "_&&_",
    "_||_",
    "!_",
    "-_",
    "_-_",
    "_+_",
    "_*_",
    "_/_",
    "_%_",
    "_==_",
    "_!=_",
    "_<_",
    "_<=_",
    "_>_",
    "_>=_",
    "_[_]",
    "@in",
    "@not_strictly_false",
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "dyn",
    "type",
    "version_lt",
    "version_le",
    "version_gt",
    "version_ge",
    "version_eq",
];

/// The functions named in error messages: those a person writes by name.
const USER_FUNCTIONS: &[&str] = &[
    "version_lt",
    "version_le",
    "version_gt",
    "version_ge",
    "version_eq",
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "dyn",
    "type",
    "has",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
];

/// The variable names, in the order of the documentation.
const VARIABLE_NAMES: &[&str] = &[
    "endpoint",
    "manufacturer",
    "model",
    "serial",
    "firmware",
    "hardware",
    "software",
    "device_type",
    "lwm2m_version",
    "objects",
    "protocols",
    "delivery",
    "online",
    "awake",
    "queue_mode",
    "next_wake",
    "last_seen",
    "bearer",
    "bearer_code",
    "has_wifi",
    "signal",
    "link_quality",
    "cell_id",
    "mcc",
    "mnc",
    "roaming",
    "lat",
    "lon",
    "region",
    "battery",
    "on_mains",
    "billing",
    "rate_plan",
    "labels",
];

/// What kind of problem a filter has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterErrorKind {
    TooLong,
    TooDeep,
    TooExpensive,
    Syntax,
    UnknownVariable,
    UnknownFunction,
    Unsupported,
    Internal,
}

/// Why a filter was refused, and where: what an API answers 400 with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{line}:{column}: {message}")]
pub struct FilterError {
    pub kind: FilterErrorKind,
    pub message: String,
    /// Byte offset into the source.
    pub offset: usize,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub column: u32,
}

impl FilterError {
    /// An error at byte `offset` (clamped to the source, moved back to a
    /// character boundary).
    fn at(source: &str, offset: usize, kind: FilterErrorKind, message: String) -> FilterError {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &source[..offset];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = source[line_start..offset].chars().count() + 1;
        FilterError {
            kind,
            message,
            offset,
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }

    /// An error at a 1-based line and character column, as cel reports them.
    fn at_line_column(
        source: &str,
        line: isize,
        column: isize,
        kind: FilterErrorKind,
        message: String,
    ) -> FilterError {
        let mut offset = 0;
        if line >= 1 {
            let mut lines = source.split_inclusive('\n');
            for _ in 1..line {
                offset += lines.next().map_or(0, str::len);
            }
            let text = lines.next().unwrap_or("");
            let text = text.strip_suffix('\n').unwrap_or(text);
            let skip = usize::try_from(column.saturating_sub(1)).unwrap_or(0);
            offset += text.char_indices().nth(skip).map_or(text.len(), |(i, _)| i);
        }
        FilterError::at(source, offset, kind, message)
    }

    fn internal(message: &str) -> FilterError {
        FilterError {
            kind: FilterErrorKind::Internal,
            message: message.to_string(),
            offset: 0,
            line: 1,
            column: 1,
        }
    }
}

/// A compiled filter. Cheap to clone; shareable between threads.
#[derive(Clone)]
pub struct Filter {
    inner: Arc<Inner>,
}

struct Inner {
    source: Box<str>,
    program: Program,
    reads: Changed,
    names: BTreeSet<&'static str>,
    cost: u64,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("source", &self.source())
            .field("reads", &self.inner.reads)
            .finish()
    }
}

impl Filter {
    /// Parses and checks a filter; see the module doc for what is refused.
    pub fn compile(source: &str) -> Result<Filter, FilterError> {
        guard::check(source)?;
        env::env().ok_or_else(|| FilterError::internal("CEL environment unavailable"))?;
        let parsed = std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("filter-parse".into())
                .stack_size(PARSE_STACK)
                .spawn_scoped(s, || parse(source))
                .map_err(|_| FilterError::internal("could not start the parser thread"))?;
            handle
                .join()
                .unwrap_or_else(|_| Err(FilterError::internal("the CEL parser failed")))
        })?;
        let (program, analysis) = parsed;
        let names = analysis.reads.names().collect();
        Ok(Filter {
            inner: Arc::new(Inner {
                source: source.into(),
                program,
                reads: analysis.reads,
                names,
                cost: analysis.cost,
            }),
        })
    }

    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The attributes the filter reads: a change to any other cannot change
    /// whether it matches.
    pub fn references(&self) -> &BTreeSet<&'static str> {
        &self.inner.names
    }

    /// [`Filter::references`] as a set to intersect with [`Changed`].
    pub fn reads(&self) -> Changed {
        self.inner.reads
    }

    /// Whether the filter reads `attr`.
    pub fn reads_attr(&self, attr: Attr) -> bool {
        self.inner.reads.contains(attr)
    }

    /// The bound of evaluation steps per device the compile-time check
    /// computed.
    pub fn cost_bound(&self) -> u64 {
        self.inner.cost
    }

    /// Whether the device matches: the filter evaluates to `true`. Errors
    /// and non-bool results do not match.
    pub fn matches(&self, attrs: &Attributes) -> bool {
        matches!(self.run(attrs), Ok(Value::Bool(true)))
    }

    /// The raw result of evaluating the filter on a device, for previews
    /// that show why a device does not match.
    pub fn evaluate(&self, attrs: &Attributes) -> Result<Value, String> {
        self.run(attrs).map_err(|e| e.to_string())
    }

    fn run(&self, attrs: &Attributes) -> Result<Value, ExecutionError> {
        let Some(env) = env::env() else {
            return Err(ExecutionError::InternalError("no CEL environment".into()));
        };
        let resolver = vars::Vars(attrs);
        let mut ctx = Context::with_env(Arc::clone(env));
        ctx.set_variable_resolver(&resolver);
        // cel is not ours to prove panic-free; one device's odd value must
        // not take the server down.
        catch_unwind(AssertUnwindSafe(|| self.inner.program.execute(&ctx)))
            .unwrap_or_else(|_| Err(ExecutionError::InternalError("panic".into())))
    }
}

/// Parses and analyses; runs on the big-stack thread, as both recurse.
fn parse(source: &str) -> Result<(Program, check::Analysis), FilterError> {
    let program = Program::compile(source).map_err(|errors| {
        let first = errors.errors.iter().min_by_key(|e| e.pos);
        match first {
            Some(e) => {
                let (kind, message) = if e.msg.contains("Recursion limit") {
                    (
                        FilterErrorKind::TooDeep,
                        "filter is nested too deeply".to_string(),
                    )
                } else {
                    (FilterErrorKind::Syntax, e.msg.clone())
                };
                if e.pos.0 >= 1 {
                    FilterError::at_line_column(source, e.pos.0, e.pos.1, kind, message)
                } else {
                    FilterError::at(source, 0, kind, message)
                }
            }
            None => FilterError::at(source, 0, FilterErrorKind::Syntax, "syntax error".into()),
        }
    })?;
    let analysis = check::analyse(program.expression(), program.source_info(), source)?;
    Ok((program, analysis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lwm2m_objects::{Path, Value as V};

    fn device() -> Attributes {
        let mut a = Attributes::new("dev-1").unwrap();
        let p = |s: &str| s.parse::<Path>().unwrap();
        a.apply(&p("/3/0/0"), &V::String("Quectel".into()));
        a.apply(&p("/3/0/1"), &V::String("BG95".into()));
        a.apply(&p("/3/0/3"), &V::String("2.0.9".into()));
        a.apply(&p("/4/0/0"), &V::Integer(7));
        a.apply(&p("/4/0/2"), &V::Integer(-95));
        a.apply(&p("/6/0/0"), &V::Float(48.1));
        a.apply(&p("/6/0/1"), &V::Float(11.6));
        a.apply_multi(&p("/5/0/8"), &[(0, V::Integer(0)), (1, V::Integer(1))]);
        a.set_objects([(3, "1.1"), (5, "1.0")]);
        a.set_online(true);
        a.apply_external(
            &serde_json::from_str(
                r#"{"billing_state": "active", "labels": {"ring": "beta", "site": "hq"}}"#,
            )
            .unwrap(),
            &mut Default::default(),
        )
        .unwrap();
        a
    }

    fn matches(src: &str, a: &Attributes) -> bool {
        Filter::compile(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .matches(a)
    }

    #[test]
    fn the_example_from_the_issue() {
        let f = Filter::compile(
            r#"model == "BG95" && version_lt(firmware, "2.1.0") && region in ["eu-west"] && !roaming"#,
        )
        .unwrap();
        assert_eq!(
            f.references().iter().copied().collect::<Vec<_>>(),
            ["firmware", "model", "region", "roaming"]
        );
        let mut a = device();
        assert!(!f.matches(&a), "no region yet");
        let regions = crate::regions::Regions::from_json(
            r#"[{"name": "eu-west", "bbox": {"min_lat": 35, "max_lat": 60, "min_lon": -11, "max_lon": 15}}]"#,
        )
        .unwrap();
        a.rederive(&crate::attributes::FleetContext {
            regions: Some(&regions),
            ..Default::default()
        });
        assert_eq!(a.region(), Some("eu-west"));
        assert!(f.matches(&a));
        a.apply(&"/3/0/3".parse().unwrap(), &V::String("2.1.0".into()));
        assert!(!f.matches(&a));
    }

    #[test]
    fn every_variable_resolves() {
        let a = device();
        for name in VARIABLE_NAMES {
            let f = Filter::compile(&format!("type({name}) != bool || {name} || !{name}")).unwrap();
            assert!(f.evaluate(&a).is_ok(), "{name}: {:?}", f.evaluate(&a));
            assert!(f.reads_attr(Attr::from_name(name).unwrap()));
        }
        assert_eq!(
            VARIABLE_NAMES.len(),
            Attr::ALL.iter().filter(|a| a.is_filter_variable()).count()
        );
    }

    #[test]
    fn variables_have_their_values() {
        let a = device();
        for src in [
            "endpoint == 'dev-1'",
            "manufacturer == 'Quectel' && model.startsWith('BG')",
            "serial == null && hardware == null",
            "bearer == 'cellular' && bearer_code == 7",
            "signal < -90 && signal > -100",
            "lat > 48.0 && lon < 12.0",
            "5 in objects && !(6 in objects) && size(objects) == 2",
            "protocols == [0, 1]",
            "online && awake == null",
            "billing == 'active' && rate_plan == null",
            "labels.ring == 'beta' && labels['site'] == 'hq' && !has(labels.owner)",
            "labels.exists(k, k == 'site')",
            "size(labels) == 2",
            "!roaming && region == null",
            "battery == null || battery >= 20",
            "objects.all(o, o < 10)",
            "type(firmware) == string",
        ] {
            assert!(matches(src, &a), "{src}");
        }
    }

    #[test]
    fn unknown_values_errors_and_non_bools_do_not_match() {
        let a = device();
        for src in [
            "battery < 20",
            "!(battery < 20)",
            "labels.owner == 'x'",
            "1 / 0 == 1",
            "model",
            "42",
            "null",
            "[1, 2][5] == 1",
            "9223372036854775807 + 1 > 0",
        ] {
            assert!(!matches(src, &a), "{src}");
        }
        // && and || absorb errors where the other side decides.
        assert!(!matches("false && battery < 20", &a));
        assert!(!matches("battery < 20 && false", &a));
        assert!(matches("true || battery < 20", &a));
        assert!(matches("battery < 20 || true", &a));
        assert!(matches("!version_lt(serial, '1.0')", &a));
    }

    #[test]
    fn unknown_names_are_refused_with_their_position() {
        let e = Filter::compile("model == 'x' &&\n  colour == 'red'").unwrap_err();
        assert_eq!(e.kind, FilterErrorKind::UnknownVariable);
        assert!(e.message.contains("'colour'"), "{}", e.message);
        assert_eq!((e.line, e.column, e.offset), (2, 3, 18));

        let e = Filter::compile("frobnicate(model)").unwrap_err();
        assert_eq!(e.kind, FilterErrorKind::UnknownFunction);
        assert!(e.message.contains("'frobnicate'"), "{}", e.message);

        let e = Filter::compile("model.matches('^BG')").unwrap_err();
        assert_eq!(e.kind, FilterErrorKind::UnknownFunction);

        // Positions count characters, offsets bytes.
        let e = Filter::compile("\"é\" == nope").unwrap_err();
        assert_eq!(e.kind, FilterErrorKind::UnknownVariable);
        assert_eq!((e.line, e.column, e.offset), (1, 8, 8));

        // A comprehension's own variable is not free; an outer one is.
        assert!(Filter::compile("objects.exists(x, x == 5)").is_ok());
        assert!(Filter::compile("objects.exists(model, model == 5)")
            .unwrap()
            .references()
            .contains("objects"));
        assert!(!Filter::compile("objects.exists(model, model == 5)")
            .unwrap()
            .references()
            .contains("model"));
        let e = Filter::compile("objects.exists(x, x == 5) && x == 1").unwrap_err();
        assert_eq!(e.kind, FilterErrorKind::UnknownVariable);
        assert!(Filter::compile("Foo{a: 1}").is_err());
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let e = Filter::compile("model == ").unwrap_err();
        assert_eq!(e.kind, FilterErrorKind::Syntax);
        assert_eq!((e.line, e.column, e.offset), (1, 10, 9));
        let e = Filter::compile("\"éé\" == x &&\n )").unwrap_err();
        assert_eq!(e.kind, FilterErrorKind::Syntax);
        assert_eq!((e.line, e.column), (2, 2));
        assert_eq!(&"\"éé\" == x &&\n )"[e.offset..], ")");
        assert!(e.to_string().starts_with("2:2: "));
        for bad in [
            "",
            "(",
            "'unterminated",
            "a.?b",
            "{?'a': 1}",
            "model ==== 1",
            "objects.exists(1, true)",
        ] {
            let e = Filter::compile(bad).unwrap_err();
            assert_eq!(e.kind, FilterErrorKind::Syntax, "{bad}: {e}");
        }
    }

    #[test]
    fn depth_and_cost_are_bounded() {
        let deep = format!(
            "{}true{}",
            "[".repeat(MAX_NESTING + 1),
            "]".repeat(MAX_NESTING + 1)
        );
        assert_eq!(
            Filter::compile(&deep).unwrap_err().kind,
            FilterErrorKind::TooDeep
        );
        // Passes the text scan, but evaluation would recurse too far.
        let chain = format!("battery{} > 0", " + 1".repeat(MAX_EVAL_DEPTH + 1));
        assert_eq!(
            Filter::compile(&chain).unwrap_err().kind,
            FilterErrorKind::TooDeep
        );
        let ok = format!("battery{} > 0", " + 1".repeat(MAX_EVAL_DEPTH - 4));
        assert!(Filter::compile(&ok).is_ok());

        assert!(Filter::compile("labels.all(k, protocols.exists(p, p == 1))").is_ok());
        let nested = "objects.exists(a, objects.exists(b, a == b))";
        assert_eq!(
            Filter::compile(nested).unwrap_err().kind,
            FilterErrorKind::TooExpensive
        );
        let list = format!("[{}]", vec!["1"; 500].join(","));
        let e =
            Filter::compile(&format!("{list}.exists(a, {list}.exists(b, a == b))")).unwrap_err();
        assert_eq!(e.kind, FilterErrorKind::TooExpensive);
        assert!(Filter::compile(&format!("{list}.exists(a, a == battery)")).is_ok());
    }

    #[test]
    fn the_deepest_accepted_filters_compile_and_run_on_a_small_stack() {
        let a = device();
        let parens = format!(
            "{}battery{}{} == null",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING),
            " + 1".repeat(MAX_EVAL_DEPTH - 4)
        );
        let lists = format!(
            "{}1{} != []",
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        let calls = format!(
            "{}model{} == 'BG95'",
            "string(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        let ternaries = format!(
            "{}true",
            "battery == 1 ? false : ".repeat(MAX_EVAL_DEPTH - 4)
        );
        for src in [parens, lists, calls, ternaries] {
            let f = Filter::compile(&src).unwrap_or_else(|e| panic!("{src}: {e}"));
            // Test threads have 2 MiB stacks; evaluation happens right here.
            let _ = f.matches(&a);
        }
    }

    #[test]
    fn every_allowed_function_exists_in_the_environment() {
        let a = device();
        for src in [
            "1 > 0 ? true : false",
            "-(1) < 0 && 2 - 1 == 1 && 2 * 2 == 4 && 4 / 2 == 2 && 5 % 2 == 1 && 1 + 1 != 3",
            "1 <= 1 && 1 >= 1",
            "[1][0] == 1 && 1 in [1]",
            "[1].all(x, x == 1) && [1].exists_one(x, x == 1)",
            "size('ab') == 2 && 'abc'.contains('b') && 'abc'.startsWith('a') && 'abc'.endsWith('c')",
            "int('1') == 1 && uint(1) == 1u && double(1) == 1.0 && string(1) == '1' && bool('true')",
            "dyn(1) == 1 && type(1) == int",
            "version_le('1', '1') && version_ge('1', '1') && version_eq('1', '1') && version_gt('2', '1') && version_lt('1', '2')",
            "[1, 2].map(x, x * 2) == [2, 4] && [1, 2].filter(x, x > 1) == [2]",
        ] {
            let f = Filter::compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(f.evaluate(&a), Ok(Value::Bool(true)), "{src}");
        }
    }

    #[test]
    fn filters_are_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Filter>();
        let f = Filter::compile("online").unwrap();
        let a = device();
        let g = f.clone();
        assert!(std::thread::spawn(move || g.matches(&a)).join().unwrap());
    }

    #[test]
    fn a_change_of_an_unreferenced_attribute_cannot_matter() {
        let f = Filter::compile("battery < 20").unwrap();
        assert!(!f.reads().intersects(Changed::NONE.with(Attr::Model)));
        assert!(f.reads().intersects(Changed::NONE.with(Attr::Battery)));
        assert_eq!(f.source(), "battery < 20");
        assert!(f.cost_bound() > 0);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn arbitrary_text_never_panics(src in "\\PC{0,200}") {
                if let Ok(f) = Filter::compile(&src) {
                    let _ = f.matches(&device());
                }
            }

            #[test]
            fn filter_like_text_never_panics(
                src in "[a-z_ ]{0,6}([(\\[{!<>=+*/%?:.,&|'\"0-9 -]|model|battery|labels|objects|version_lt|exists|null){0,60}"
            ) {
                match Filter::compile(&src) {
                    Ok(f) => { let _ = f.matches(&device()); }
                    Err(e) => prop_assert!(e.offset <= src.len() && e.line >= 1 && e.column >= 1),
                }
            }
        }
    }
}
