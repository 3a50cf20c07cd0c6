//! Ordering of firmware version strings as modules report them.
//!
//! Vendors do not follow semver: `1.2.10`, `v2.1.0`, `mfw_nrf9160_1.3.2`,
//! `BG95M3LAR02A03_01.012.01.012`, `2.1.0-rc1` all occur. Campaign targeting
//! needs "older than" on all of them, so the comparison is a heuristic that is
//! right for the common shapes and, above all, total and deterministic:
//!
//! * A leading `v` or `V` before a digit is ignored (`v2.1.0` == `2.1.0`).
//! * A pre-release suffix starts at the first `-` that follows a digit and
//!   precedes an ASCII letter (`2.1.0-rc1`, `1.0-beta-2`); a version with one
//!   sorts before the same version without (`2.1.0-rc1` < `2.1.0`). Suffixes
//!   of equal versions compare with the same rules.
//! * The rest is split into runs of ASCII digits, runs of separators (ASCII
//!   punctuation and whitespace, all alike: `1.2` == `1_2`) and runs of
//!   anything else ("letters").
//! * Runs compare pairwise: digit runs numerically at any length (leading
//!   zeros dropped, then shorter is smaller, then digit by digit, so no
//!   overflow: `010` == `10`), letter runs ASCII-case-insensitively byte by
//!   byte; runs of different kinds order separator < letters < digits.
//! * When one sequence of runs is a prefix of the other, the shorter one is
//!   smaller (`1.2` < `1.2.1`).
//!
//! Equality is "compares equal", an equivalence: `1.02` and `1.2` are the same
//! version. Comparing never allocates.

use std::cmp::Ordering;
use std::fmt;

/// Compares two version strings; see the module documentation for the rules.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a_main, a_pre) = split(a);
    let (b_main, b_pre) = split(b);
    compare_runs(a_main, b_main).then_with(|| match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(x), Some(y)) => compare_runs(x, y),
    })
}

/// A version string ordered by [`compare`]: for sorting and maps.
#[derive(Clone, Copy, Debug)]
pub struct Version<'a>(pub &'a str);

impl PartialEq for Version<'_> {
    fn eq(&self, other: &Self) -> bool {
        compare(self.0, other.0) == Ordering::Equal
    }
}
impl Eq for Version<'_> {}
impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self.0, other.0)
    }
}
impl fmt::Display for Version<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The version without a leading `v`, and its pre-release suffix.
fn split(s: &str) -> (&str, Option<&str>) {
    let s = s.trim();
    let b = s.as_bytes();
    let s = if b.len() >= 2 && (b[0] == b'v' || b[0] == b'V') && b[1].is_ascii_digit() {
        &s[1..]
    } else {
        s
    };
    let b = s.as_bytes();
    for i in 1..b.len().saturating_sub(1) {
        if b[i] == b'-' && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_alphabetic() {
            // '-' is ASCII, so both slices start on a character boundary.
            return (&s[..i], Some(&s[i + 1..]));
        }
    }
    (s, None)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Separator,
    Letters,
    Digits,
}

fn kind(b: u8) -> Kind {
    if b.is_ascii_digit() {
        Kind::Digits
    } else if b.is_ascii_punctuation() || b.is_ascii_whitespace() {
        Kind::Separator
    } else {
        Kind::Letters
    }
}

/// Runs of one kind of byte. Multi-byte characters are all "letters", so a
/// run never splits one.
struct Runs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Runs<'a> {
    type Item = (Kind, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let first = *self.rest.first()?;
        let k = kind(first);
        let len = self
            .rest
            .iter()
            .position(|&b| kind(b) != k)
            .unwrap_or(self.rest.len());
        let (run, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some((k, run))
    }
}

fn compare_runs(a: &str, b: &str) -> Ordering {
    let mut x = Runs { rest: a.as_bytes() };
    let mut y = Runs { rest: b.as_bytes() };
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ka, ra)), Some((kb, rb))) => {
                let o = ka.cmp(&kb).then_with(|| match ka {
                    Kind::Separator => Ordering::Equal,
                    Kind::Digits => compare_numbers(ra, rb),
                    Kind::Letters => compare_letters(ra, rb),
                });
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

fn compare_numbers(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |d: &'_ [u8]| -> usize { d.iter().take_while(|&&c| c == b'0').count() };
    let a = &a[strip(a)..];
    let b = &b[strip(b)..];
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn compare_letters(a: &[u8], b: &[u8]) -> Ordering {
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Ordering::*;

    #[test]
    fn real_module_versions() {
        let cases = [
            ("1.2.10", "1.2.9", Greater),
            ("v2.1.0", "2.1.0", Equal),
            ("V2.1.0", "2.1.1", Less),
            ("mfw_nrf9160_1.3.2", "mfw_nrf9160_1.3.10", Less),
            (
                "BG95M3LAR02A03_01.012.01.012",
                "BG95M3LAR02A03_01.012.01.011",
                Greater,
            ),
            (
                "BG95M3LAR02A03_01.012.01.012",
                "BG95M3LAR02A03_01.013.01.001",
                Less,
            ),
            ("2.1.0-rc1", "2.1.0", Less),
            ("2.1.0-rc1", "2.1.0-rc2", Less),
            ("2.1.0-rc10", "2.1.0-rc9", Greater),
            ("2.1.0-rc1", "2.0.9", Greater),
            ("1.2", "1.2.1", Less),
            ("1.02", "1.2", Equal),
            ("1_2", "1.2", Equal),
            ("", "0", Less),
            ("", "", Equal),
            ("vendor", "v", Greater),
            ("1.0.0-20200101", "1.0.0", Greater),
            ("nrf-9160-1.3.2", "nrf-9160-1.3.10", Less),
            ("1.2.3-SNAPSHOT", "1.2.3", Less),
            ("ABC", "abc", Equal),
            (
                "99999999999999999999999999999999",
                "100000000000000000000000000000000",
                Less,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn pre_release_needs_a_digit_before_and_a_letter_after() {
        assert_eq!(split("2.1.0-rc1"), ("2.1.0", Some("rc1")));
        assert_eq!(split("v1.0-beta-2"), ("1.0", Some("beta-2")));
        assert_eq!(split("foo-bar"), ("foo-bar", None));
        assert_eq!(split("1.0-"), ("1.0-", None));
        assert_eq!(split("-rc"), ("-rc", None));
        assert_eq!(split("v"), ("v", None));
    }

    #[test]
    fn sorting_a_release_history() {
        let mut v = vec![
            "2.1.0",
            "v1.10.0",
            "1.9.3",
            "2.1.0-rc2",
            "2.0.0",
            "2.1.0-rc1",
            "1.9.10",
        ];
        v.sort_by(|a, b| compare(a, b));
        assert_eq!(
            v,
            [
                "1.9.3",
                "1.9.10",
                "v1.10.0",
                "2.0.0",
                "2.1.0-rc1",
                "2.1.0-rc2",
                "2.1.0"
            ]
        );
    }

    #[test]
    fn non_ascii_is_compared_without_splitting_characters() {
        assert_eq!(compare("1.0-été", "1.0-éte"), Greater);
        assert_eq!(compare("ü1", "ü2"), Less);
    }

    fn version() -> impl Strategy<Value = String> {
        prop_oneof![
            "[vV]?[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-(rc|beta|RC)[0-9]?)?",
            "[a-z_]{0,4}[0-9]{0,25}[._-]?[A-Za-z0-9._-]{0,8}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn total_order(a in version(), b in version(), c in version()) {
            let ab = compare(&a, &b);
            prop_assert_eq!(ab, compare(&b, &a).reverse());
            prop_assert_eq!(compare(&a, &a), Equal);
            let bc = compare(&b, &c);
            if ab != Greater && bc != Greater {
                prop_assert_ne!(compare(&a, &c), Greater);
            }
            if ab == Equal && bc == Equal {
                prop_assert_eq!(compare(&a, &c), Equal);
            }
        }

        #[test]
        fn numeric_runs_compare_as_numbers(x in 0u64..u64::MAX, y in 0u64..u64::MAX, zeros in 0usize..3) {
            let a = format!("1.{}{x}", "0".repeat(zeros));
            let b = format!("1.{y}");
            prop_assert_eq!(compare(&a, &b), x.cmp(&y));
        }

        #[test]
        fn sorting_is_consistent(mut v in proptest::collection::vec(version(), 0..20)) {
            v.sort_by(|a, b| compare(a, b));
            for w in v.windows(2) {
                prop_assert_ne!(compare(&w[0], &w[1]), Greater);
            }
        }
    }
}
