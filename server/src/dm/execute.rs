//! Execute arguments (LwM2M Core "Execute Operation"), validated before
//! they are sent so that a malformed list never reaches a device:
//!
//! ```text
//! arglist = arg *( "," arg )
//! arg     = DIGIT [ "=" "'" *CHAR "'" ]
//! CHAR    = "!" / %x23-26 / %x28-5B / %x5D-7E
//! ```
//!
//! so a value is printable ASCII without space, `"`, `'` and `\`.
//! Examples: `5`, `2='10.3'`, `0,1='x'`.

use std::fmt;
use std::str::FromStr;

/// The longest argument text accepted (it travels as one CoAP payload).
pub const MAX_ARGS_LEN: usize = 1024;

/// One argument: a digit 0-9 and an optional value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecuteArg {
    pub digit: u8,
    pub value: Option<String>,
}

/// A validated argument list.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExecuteArgs(Vec<ExecuteArg>);

/// Why an argument list is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteArgsError {
    #[error("argument list is longer than {MAX_ARGS_LEN} bytes")]
    TooLong,
    #[error("argument {index}: expected a digit 0-9")]
    NotADigit { index: usize },
    #[error("argument {index}: expected \"='value'\" or ',' after the digit")]
    AfterDigit { index: usize },
    #[error("argument {index}: value is not enclosed in single quotes")]
    Unquoted { index: usize },
    #[error("argument {index}: character {found:?} is not allowed in a value")]
    BadChar { index: usize, found: char },
    #[error("argument {index}: empty argument")]
    Empty { index: usize },
}

impl ExecuteArgs {
    /// Builds a list from arguments, checking each.
    pub fn new(args: Vec<ExecuteArg>) -> Result<ExecuteArgs, ExecuteArgsError> {
        for (index, a) in args.iter().enumerate() {
            if a.digit > 9 {
                return Err(ExecuteArgsError::NotADigit { index });
            }
            if let Some(v) = &a.value {
                if let Some(found) = v.chars().find(|c| !is_value_char(*c)) {
                    return Err(ExecuteArgsError::BadChar { index, found });
                }
            }
        }
        let out = ExecuteArgs(args);
        if out.to_string().len() > MAX_ARGS_LEN {
            return Err(ExecuteArgsError::TooLong);
        }
        Ok(out)
    }

    pub fn args(&self) -> &[ExecuteArg] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `CHAR = "!" / %x23-26 / %x28-5B / %x5D-7E`.
fn is_value_char(c: char) -> bool {
    matches!(c, '!' | '\x23'..='\x26' | '\x28'..='\x5B' | '\x5D'..='\x7E')
}

impl FromStr for ExecuteArgs {
    type Err = ExecuteArgsError;

    /// Parses `5`, `2='10.3'`, `0,1='x'`; the empty text is no argument.
    fn from_str(s: &str) -> Result<ExecuteArgs, ExecuteArgsError> {
        if s.len() > MAX_ARGS_LEN {
            return Err(ExecuteArgsError::TooLong);
        }
        if s.is_empty() {
            return Ok(ExecuteArgs::default());
        }
        let mut out = Vec::new();
        let mut rest = s;
        let mut index = 0;
        loop {
            let mut chars = rest.chars();
            let digit = match chars.next() {
                Some(c @ '0'..='9') => c as u8 - b'0',
                Some(',') | None => return Err(ExecuteArgsError::Empty { index }),
                Some(_) => return Err(ExecuteArgsError::NotADigit { index }),
            };
            rest = chars.as_str();
            let value = if let Some(v) = rest.strip_prefix('=') {
                let v = v
                    .strip_prefix('\'')
                    .ok_or(ExecuteArgsError::Unquoted { index })?;
                let end = v.find('\'').ok_or(ExecuteArgsError::Unquoted { index })?;
                let text = v.get(..end).unwrap_or("");
                if let Some(found) = text.chars().find(|c| !is_value_char(*c)) {
                    return Err(ExecuteArgsError::BadChar { index, found });
                }
                rest = v.get(end + 1..).unwrap_or("");
                Some(text.to_string())
            } else {
                None
            };
            out.push(ExecuteArg { digit, value });
            match rest.strip_prefix(',') {
                Some(r) => rest = r,
                None if rest.is_empty() => return Ok(ExecuteArgs(out)),
                None => return Err(ExecuteArgsError::AfterDigit { index }),
            }
            index += 1;
        }
    }
}

impl fmt::Display for ExecuteArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", a.digit)?;
            if let Some(v) = &a.value {
                write!(f, "='{v}'")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_specification_examples() {
        for s in [
            "5",
            "2='10.3'",
            "0,1='x'",
            "9=''",
            "1='a!#$%&()*+-./:;<=>?@[]^_`{|}~'",
        ] {
            let a: ExecuteArgs = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(a.to_string(), s);
        }
        let a: ExecuteArgs = "2='10.3',5".parse().unwrap();
        assert_eq!(
            a.args(),
            &[
                ExecuteArg {
                    digit: 2,
                    value: Some("10.3".into())
                },
                ExecuteArg {
                    digit: 5,
                    value: None
                }
            ]
        );
        assert!("".parse::<ExecuteArgs>().unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed_lists() {
        use ExecuteArgsError::*;
        let rows: &[(&str, ExecuteArgsError)] = &[
            ("a", NotADigit { index: 0 }),
            ("10", AfterDigit { index: 0 }),
            ("1,", Empty { index: 1 }),
            (",1", Empty { index: 0 }),
            ("1,,2", Empty { index: 1 }),
            ("1=x", Unquoted { index: 0 }),
            ("1='x", Unquoted { index: 0 }),
            (
                "1='a b'",
                BadChar {
                    index: 0,
                    found: ' ',
                },
            ),
            (
                "1='a\"'",
                BadChar {
                    index: 0,
                    found: '"',
                },
            ),
            (
                "1='a\\'",
                BadChar {
                    index: 0,
                    found: '\\',
                },
            ),
            (
                "1='é'",
                BadChar {
                    index: 0,
                    found: 'é',
                },
            ),
            ("1='x'y", AfterDigit { index: 0 }),
            (
                "1='x',2='a\nb'",
                BadChar {
                    index: 1,
                    found: '\n',
                },
            ),
        ];
        for (s, e) in rows {
            assert_eq!(s.parse::<ExecuteArgs>().as_ref(), Err(e), "{s:?}");
        }
        assert_eq!("1".repeat(2000).parse::<ExecuteArgs>(), Err(TooLong));
    }

    #[test]
    fn constructor_checks_each_argument() {
        let bad = ExecuteArgs::new(vec![ExecuteArg {
            digit: 10,
            value: None,
        }]);
        assert_eq!(bad, Err(ExecuteArgsError::NotADigit { index: 0 }));
        let bad = ExecuteArgs::new(vec![ExecuteArg {
            digit: 1,
            value: Some("it's".into()),
        }]);
        assert_eq!(
            bad,
            Err(ExecuteArgsError::BadChar {
                index: 0,
                found: '\''
            })
        );
        let ok = ExecuteArgs::new(vec![ExecuteArg {
            digit: 2,
            value: Some("10.3".into()),
        }]);
        assert_eq!(ok.unwrap().to_string(), "2='10.3'");
    }
}
