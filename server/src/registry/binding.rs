//! The `b=` binding parameter: which transports the client can be reached
//! over, and, in 1.0's spelling, whether it uses queue mode.

use std::fmt;

use super::error::{echo, RegistrationError};

/// The transports of a `b=` value. 1.0 allowed `U`, `UQ`, `S`, `SQ`, `US`,
/// `UQS`; 1.1 and 1.2 allow any of `U M H T S N` and moved queue mode to
/// the separate `Q` parameter. `queue` keeps 1.0's `Q` letter, which some
/// 1.1 devices still send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Binding {
    pub udp: bool,
    pub mqtt: bool,
    pub http: bool,
    pub tcp: bool,
    pub sms: bool,
    pub non_ip: bool,
    pub queue: bool,
}

impl Default for Binding {
    /// `U`: the specification's default when `b` is absent.
    fn default() -> Binding {
        Binding {
            udp: true,
            ..Binding::NONE
        }
    }
}

impl Binding {
    const NONE: Binding = Binding {
        udp: false,
        mqtt: false,
        http: false,
        tcp: false,
        sms: false,
        non_ip: false,
        queue: false,
    };

    /// Parses a `b=` value. Letters may come in any order; a repeated
    /// letter is tolerated (it changes nothing); an empty value or an
    /// unknown letter is refused with 4.00.
    pub fn parse(value: &str) -> Result<Binding, RegistrationError> {
        if value.is_empty() {
            return Err(RegistrationError::bad_request("binding b= is empty"));
        }
        let mut b = Binding::NONE;
        for c in value.chars() {
            let flag = match c {
                'U' => &mut b.udp,
                'M' => &mut b.mqtt,
                'H' => &mut b.http,
                'T' => &mut b.tcp,
                'S' => &mut b.sms,
                'N' => &mut b.non_ip,
                'Q' => &mut b.queue,
                _ => {
                    return Err(RegistrationError::bad_request(format!(
                        "binding b={} has unknown letter {c:?} (allowed: U M H T S N Q)",
                        echo(value)
                    )))
                }
            };
            *flag = true;
        }
        if b == Binding::NONE
            || b == (Binding {
                queue: true,
                ..Binding::NONE
            })
        {
            return Err(RegistrationError::bad_request(format!(
                "binding b={} names no transport",
                echo(value)
            )));
        }
        Ok(b)
    }
}

impl fmt::Display for Binding {
    /// Canonical order `U M H T S N`, then `Q`; with `U Q S` that gives
    /// 1.0's `UQS` spelling only when `S` is absent, which is why 1.0
    /// devices should be answered with what they sent, not this.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, c) in [
            (self.udp, 'U'),
            (self.mqtt, 'M'),
            (self.http, 'H'),
            (self.tcp, 'T'),
            (self.sms, 'S'),
            (self.non_ip, 'N'),
            (self.queue, 'Q'),
        ] {
            if on {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_1_0_binding_parses() {
        for (s, udp, sms, queue) in [
            ("U", true, false, false),
            ("UQ", true, false, true),
            ("S", false, true, false),
            ("SQ", false, true, true),
            ("US", true, true, false),
            ("UQS", true, true, true),
        ] {
            let b = Binding::parse(s).unwrap();
            assert_eq!((b.udp, b.sms, b.queue), (udp, sms, queue), "{s}");
        }
    }

    #[test]
    fn the_1_2_letters_parse() {
        let b = Binding::parse("UMHTSN").unwrap();
        assert!(b.udp && b.mqtt && b.http && b.tcp && b.sms && b.non_ip && !b.queue);
        assert_eq!(b.to_string(), "UMHTSN");
    }

    #[test]
    fn unknown_letters_and_empty_values_are_refused() {
        for s in ["", "X", "u", "U Q", "Q", "U,S"] {
            let e = Binding::parse(s).unwrap_err();
            assert_eq!(e.code, (4, 0), "{s}");
        }
    }
}
