//! The CEL environment filters run in: the standard library, without the
//! optional syntax, plus the version comparisons.
//!
//! It is built once and shared: building cel's standard library registers
//! hundreds of overloads, far too much to do per evaluation. The version
//! functions are declared as overloads of (dyn, dyn) so that a `null` (an
//! unknown firmware) reaches them and answers `false`, rather than failing
//! the call and with it the whole filter (`!version_lt(firmware, "2")` is
//! then true for a device of unknown firmware, as it reads).

use std::cmp::Ordering;
use std::sync::{Arc, OnceLock};

use cel::common::types::{CelBool, CelString, DYN_TYPE};
use cel::common::value::CowVal;
use cel::{DeclarationError, Env, ExecutionError};

use crate::versions;

/// The version comparison functions, each `(string, string) -> bool`.
pub const VERSION_FUNCTIONS: &[&str] = &[
    "version_lt",
    "version_le",
    "version_gt",
    "version_ge",
    "version_eq",
];

/// The shared environment; `None` if it could not be built, which would be a
/// bug caught by the tests, reported to callers as an internal error.
pub(super) fn env() -> Option<&'static Arc<Env>> {
    static ENV: OnceLock<Option<Arc<Env>>> = OnceLock::new();
    ENV.get_or_init(|| build().ok().map(Arc::new)).as_ref()
}

fn build() -> Result<Env, DeclarationError> {
    let mut env = Env::stdlib().with_optional_support(false);
    type F = cel::common::functions::Function;
    let functions: [(&str, F); 5] = [
        ("version_lt", version_lt),
        ("version_le", version_le),
        ("version_gt", version_gt),
        ("version_ge", version_ge),
        ("version_eq", version_eq),
    ];
    for (name, f) in functions {
        env.add_overload(
            name,
            &format!("{name}_dyn_dyn"),
            vec![DYN_TYPE, DYN_TYPE],
            f,
        )?;
    }
    Ok(env)
}

fn compare_args(args: &[CowVal<'_, '_>], accept: fn(Ordering) -> bool) -> bool {
    let s = |i: usize| {
        args.get(i)
            .and_then(|v| v.downcast_ref::<CelString>())
            .map(|s| s.inner())
    };
    match (s(0), s(1)) {
        (Some(a), Some(b)) => accept(versions::compare(a, b)),
        _ => false,
    }
}

macro_rules! version_fn {
    ($name:ident, $accept:expr) => {
        fn $name<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
            Ok(CowVal::owned(CelBool::from(compare_args(&args, $accept))))
        }
    };
}

version_fn!(version_lt, Ordering::is_lt);
version_fn!(version_le, Ordering::is_le);
version_fn!(version_gt, Ordering::is_gt);
version_fn!(version_ge, Ordering::is_ge);
version_fn!(version_eq, Ordering::is_eq);

#[cfg(test)]
mod tests {
    use super::*;
    use cel::{Context, Program, Value};

    fn eval(src: &str) -> Result<Value, ExecutionError> {
        let env = env().expect("environment builds");
        let ctx = Context::with_env(Arc::clone(env));
        Program::compile(src).unwrap().execute(&ctx)
    }

    #[test]
    fn version_functions() {
        for (src, want) in [
            ("version_lt('1.2.9', '1.2.10')", true),
            ("version_lt('1.2.10', '1.2.9')", false),
            ("version_le('v2.1.0', '2.1.0')", true),
            ("version_gt('2.1.0', '2.1.0-rc1')", true),
            ("version_ge('2.0', '2.1')", false),
            ("version_eq('v2.1.0', '2.1.0')", true),
            ("version_lt(null, '1')", false),
            ("version_eq(null, null)", false),
            ("version_gt('1', 2)", false),
            ("!version_lt(null, '1')", true),
        ] {
            assert_eq!(eval(src), Ok(Value::Bool(want)), "{src}");
        }
        assert!(eval("version_lt('1')").is_err());
    }
}
