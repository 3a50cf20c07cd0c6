//! What the connectivity object (/4) says, in the terms operators target by:
//! the kind of bearer, and whether the device is roaming.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bearer codes of /4/0/0 and /4/0/1 that operators target by name.
pub mod code {
    pub const WLAN: u8 = 21;
    pub const BLUETOOTH: u8 = 22;
    pub const IEEE_802_15_4: u8 = 23;
    pub const ETHERNET: u8 = 41;
    pub const DSL: u8 = 42;
    pub const PLC: u8 = 43;
}

/// The family of a bearer: campaigns are sized differently over cellular
/// (metered) than over Wi-Fi or a wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BearerKind {
    /// 0 GSM to 7 NB-IoT.
    Cellular,
    /// 21 WLAN.
    Wifi,
    /// 41 Ethernet, 42 DSL, 43 PLC.
    Wired,
    /// Bluetooth, IEEE 802.15.4 and codes the specification leaves open.
    Other,
}

impl BearerKind {
    pub fn of(code: u8) -> BearerKind {
        match code {
            0..=7 => BearerKind::Cellular,
            code::WLAN => BearerKind::Wifi,
            code::ETHERNET | code::DSL | code::PLC => BearerKind::Wired,
            _ => BearerKind::Other,
        }
    }

    /// The name filters compare with: "cellular", "wifi", "wired", "other".
    pub fn as_str(self) -> &'static str {
        match self {
            BearerKind::Cellular => "cellular",
            BearerKind::Wifi => "wifi",
            BearerKind::Wired => "wired",
            BearerKind::Other => "other",
        }
    }
}

/// A mobile network, "MCC-MNC" as operators write it (`262-01`).
///
/// Devices report SMCC and SMNC as integers, so `262-01` and `262-001`
/// (distinct networks in principle, never both in use in one country)
/// compare equal with a device on MNC 1; the digit count is kept only to
/// print the network back as it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HomeNetwork {
    pub mcc: u16,
    pub mnc: u16,
    mnc_digits: u8,
}

impl HomeNetwork {
    /// A network from its codes: MCC below 1000, MNC below 1000.
    pub fn new(mcc: u16, mnc: u16) -> Option<HomeNetwork> {
        (mcc < 1000 && mnc < 1000).then_some(HomeNetwork {
            mcc,
            mnc,
            mnc_digits: if mnc < 100 { 2 } else { 3 },
        })
    }

    /// Whether a device reporting `mcc`/`mnc` is on this network.
    pub fn is(&self, mcc: u16, mnc: u16) -> bool {
        self.mcc == mcc && self.mnc == mnc
    }
}

/// Why a home network string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("home network must be \"MCC-MNC\" with a 3-digit MCC and a 2- or 3-digit MNC")]
pub struct HomeNetworkError;

impl FromStr for HomeNetwork {
    type Err = HomeNetworkError;
    fn from_str(s: &str) -> Result<HomeNetwork, HomeNetworkError> {
        let (mcc, mnc) = s.split_once('-').ok_or(HomeNetworkError)?;
        let digits = |t: &str, lens: &[usize]| -> Result<u16, HomeNetworkError> {
            if !lens.contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HomeNetworkError);
            }
            t.parse().map_err(|_| HomeNetworkError)
        };
        Ok(HomeNetwork {
            mcc: digits(mcc, &[3])?,
            mnc: digits(mnc, &[2, 3])?,
            mnc_digits: mnc.len() as u8,
        })
    }
}

impl fmt::Display for HomeNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:03}-{:0width$}",
            self.mcc,
            self.mnc,
            width = self.mnc_digits as usize
        )
    }
}

impl Serialize for HomeNetwork {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HomeNetwork {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HomeNetwork, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether a device on the visited network is roaming: it is when the
/// visited network is known and is none of its home networks. With no home
/// network known there is nothing to compare with, and it is not.
pub fn is_roaming(visited: Option<(u16, u16)>, homes: &[HomeNetwork]) -> bool {
    match visited {
        Some((mcc, mnc)) => !homes.is_empty() && !homes.iter().any(|h| h.is(mcc, mnc)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_kinds() {
        for c in 0..=7 {
            assert_eq!(BearerKind::of(c), BearerKind::Cellular);
        }
        assert_eq!(BearerKind::of(21), BearerKind::Wifi);
        assert_eq!(BearerKind::of(41), BearerKind::Wired);
        assert_eq!(BearerKind::of(43), BearerKind::Wired);
        assert_eq!(BearerKind::of(22), BearerKind::Other);
        assert_eq!(BearerKind::of(8), BearerKind::Other);
        assert_eq!(BearerKind::of(255).as_str(), "other");
    }

    #[test]
    fn home_network_parsing_and_printing() {
        let h: HomeNetwork = "262-01".parse().unwrap();
        assert_eq!((h.mcc, h.mnc), (262, 1));
        assert_eq!(h.to_string(), "262-01");
        assert_eq!(
            "310-410".parse::<HomeNetwork>().unwrap().to_string(),
            "310-410"
        );
        assert_eq!(
            "001-001".parse::<HomeNetwork>().unwrap().to_string(),
            "001-001"
        );
        for bad in [
            "262", "262-1", "26-01", "262-0001", "26a-01", "262-+1", "", "-", "262-01-1",
        ] {
            assert_eq!(bad.parse::<HomeNetwork>(), Err(HomeNetworkError), "{bad}");
        }
        assert_eq!(HomeNetwork::new(262, 1).unwrap().to_string(), "262-01");
        assert!(HomeNetwork::new(1000, 1).is_none());
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, "\"262-01\"");
        assert_eq!(serde_json::from_str::<HomeNetwork>(&json).unwrap(), h);
        assert!(serde_json::from_str::<HomeNetwork>("\"x\"").is_err());
    }

    #[test]
    fn roaming_rules() {
        let home = ["262-01".parse().unwrap(), "262-02".parse().unwrap()];
        assert!(!is_roaming(Some((262, 1)), &home));
        assert!(!is_roaming(Some((262, 2)), &home));
        assert!(is_roaming(Some((262, 3)), &home));
        assert!(is_roaming(Some((208, 1)), &home));
        assert!(!is_roaming(None, &home));
        assert!(!is_roaming(Some((208, 1)), &[]));
    }
}
