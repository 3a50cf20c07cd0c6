//! What a parsed filter may contain, decided before it ever runs.
//!
//! cel-rust has no type checker, and `Program::references()` names a
//! comprehension's own variable (`x` in `objects.exists(x, x == 5)`) as if it
//! were free and gives no positions; so the tree is walked here, with the
//! comprehension variables in scope. The walk refuses unknown variables and
//! functions, bounds the depth evaluation will recurse to, and bounds the
//! work one evaluation can do: comprehensions multiply the cost of their body
//! by the size of what they iterate (known for literals and for the
//! attributes' own bounded lists), so nested loops over big lists are
//! refused rather than run for every device.

use cel::common::ast::{EntryExpr, Expr, IdedExpr, SourceInfo};

use super::{FilterError, FilterErrorKind, FUNCTIONS, USER_FUNCTIONS, VARIABLE_NAMES};
use crate::attributes::{MAX_INSTANCES, MAX_LABELS, MAX_OBJECTS};
use crate::changed::{Attr, Changed};

/// Deepest tree evaluation may recurse into: cel evaluates recursively, on
/// the caller's thread.
pub const MAX_EVAL_DEPTH: usize = 24;
/// Most evaluation steps one device may cost.
pub const MAX_COST: u64 = 20_000;
/// What a comprehension over a list of unknown size is assumed to iterate.
const UNKNOWN_RANGE: u64 = 256;

/// Type names cel resolves as identifiers (`type(x) == int`).
const TYPE_NAMES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "int",
    "uint",
    "string",
    "list",
    "map",
    "null_type",
    "type",
];

pub(super) struct Analysis {
    pub reads: Changed,
    pub cost: u64,
}

pub(super) fn analyse(
    expr: &IdedExpr,
    info: &SourceInfo,
    source: &str,
) -> Result<Analysis, FilterError> {
    let mut w = Walker {
        info,
        source,
        scope: Vec::new(),
        reads: Changed::NONE,
    };
    let cost = w.walk(expr, 1)?;
    if cost > MAX_COST {
        return Err(FilterError::at(
            source,
            0,
            FilterErrorKind::TooExpensive,
            format!(
                "filter may take up to {cost} steps per device, at most {MAX_COST} are allowed \
                 (nested comprehensions over large lists?)"
            ),
        ));
    }
    Ok(Analysis {
        reads: w.reads,
        cost,
    })
}

struct Walker<'a> {
    info: &'a SourceInfo,
    source: &'a str,
    scope: Vec<&'a str>,
    reads: Changed,
}

impl<'a> Walker<'a> {
    fn error(&self, e: &IdedExpr, kind: FilterErrorKind, message: String) -> FilterError {
        // Node offsets are bytes (unlike the line/column of syntax errors,
        // which count characters).
        let byte = self
            .info
            .offset_for(e.id)
            .map_or(0, |(start, _)| start as usize);
        FilterError::at(self.source, byte, kind, message)
    }

    fn walk(&mut self, e: &'a IdedExpr, depth: usize) -> Result<u64, FilterError> {
        if depth > MAX_EVAL_DEPTH {
            return Err(self.error(
                e,
                FilterErrorKind::TooDeep,
                format!("filter is nested too deeply (at most {MAX_EVAL_DEPTH} levels)"),
            ));
        }
        let d = depth + 1;
        match &e.expr {
            Expr::Literal(_) => Ok(1),
            Expr::Ident(name) => {
                self.ident(e, name)?;
                Ok(1)
            }
            Expr::Select(s) => Ok(1 + self.walk(&s.operand, d)?),
            Expr::Call(call) => {
                if !FUNCTIONS.contains(&call.func_name.as_str()) {
                    return Err(self.error(
                        e,
                        FilterErrorKind::UnknownFunction,
                        format!(
                            "unknown function '{}' (functions: {})",
                            call.func_name,
                            USER_FUNCTIONS.join(", ")
                        ),
                    ));
                }
                let mut cost = 1u64;
                if let Some(t) = &call.target {
                    cost = cost.saturating_add(self.walk(t, d)?);
                }
                for a in &call.args {
                    cost = cost.saturating_add(self.walk(a, d)?);
                }
                Ok(cost)
            }
            Expr::List(l) => {
                let mut cost = 1u64;
                for x in &l.elements {
                    cost = cost.saturating_add(self.walk(x, d)?);
                }
                Ok(cost)
            }
            Expr::Map(m) => {
                let mut cost = 1u64;
                for entry in &m.entries {
                    let c = match &entry.expr {
                        EntryExpr::MapEntry(me) => self
                            .walk(&me.key, d)?
                            .saturating_add(self.walk(&me.value, d)?),
                        EntryExpr::StructField(f) => self.walk(&f.value, d)?,
                    };
                    cost = cost.saturating_add(c);
                }
                Ok(cost)
            }
            Expr::Comprehension(c) => {
                // Iterating recurses a level or two deeper than the tree shows.
                let d = d + 1;
                let range = self.walk(&c.iter_range, d)?;
                let n = self.range_size(&c.iter_range);
                let mark = self.scope.len();
                self.scope.push(&c.iter_var);
                if let Some(v2) = &c.iter_var2 {
                    self.scope.push(v2);
                }
                self.scope.push(&c.accu_var);
                let body = self.walk(&c.accu_init, d).and_then(|init| {
                    let cond = self.walk(&c.loop_cond, d)?;
                    let step = self.walk(&c.loop_step, d)?;
                    let result = self.walk(&c.result, d)?;
                    Ok(init
                        .saturating_add(result)
                        .saturating_add(n.saturating_mul(cond.saturating_add(step))))
                });
                self.scope.truncate(mark);
                Ok(range.saturating_add(body?))
            }
            Expr::Struct(_) => Err(self.error(
                e,
                FilterErrorKind::Unsupported,
                "message construction is not supported in filters".into(),
            )),
            Expr::Unspecified => {
                Err(self.error(e, FilterErrorKind::Syntax, "incomplete expression".into()))
            }
        }
    }

    fn ident(&mut self, e: &IdedExpr, name: &str) -> Result<(), FilterError> {
        // `@`-names are the accumulators cel's macros introduce.
        if name.starts_with('@') || self.scope.contains(&name) {
            return Ok(());
        }
        if let Some(a) = Attr::from_name(name).filter(|a| a.is_filter_variable()) {
            self.reads.insert(a);
            return Ok(());
        }
        if TYPE_NAMES.contains(&name) {
            return Ok(());
        }
        Err(self.error(
            e,
            FilterErrorKind::UnknownVariable,
            format!(
                "unknown variable '{name}' (variables: {})",
                VARIABLE_NAMES.join(", ")
            ),
        ))
    }

    /// How many elements a comprehension over `e` may visit, at most.
    fn range_size(&self, e: &IdedExpr) -> u64 {
        match &e.expr {
            Expr::List(l) => l.elements.len() as u64,
            Expr::Map(m) => m.entries.len() as u64,
            Expr::Ident(name) if !self.scope.iter().any(|s| s == name) => match name.as_str() {
                "objects" => MAX_OBJECTS as u64,
                "protocols" => MAX_INSTANCES as u64,
                "labels" => MAX_LABELS as u64,
                _ => UNKNOWN_RANGE,
            },
            Expr::Call(c) if c.func_name == "_+_" && c.args.len() == 2 => self
                .range_size(&c.args[0])
                .saturating_add(self.range_size(&c.args[1])),
            Expr::Call(c) if c.func_name == "_?_:_" && c.args.len() == 3 => {
                self.range_size(&c.args[1]).max(self.range_size(&c.args[2]))
            }
            // `map` and `filter` yield at most what they iterate.
            Expr::Comprehension(c) => self.range_size(&c.iter_range),
            _ => UNKNOWN_RANGE,
        }
    }
}
