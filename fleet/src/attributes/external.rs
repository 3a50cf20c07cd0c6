//! What the operator pushes about a device: billing, rate plan, home network
//! and labels, as a PATCH body.
//!
//! A field left out is left as it is; a field given as `null` is cleared.
//! Labels merge: each given label is set, one given as `null` is removed, the
//! others stay. The patch is checked as a whole before anything is applied,
//! so a refused patch changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::{replace, set_shared, Attributes, FleetContext, HomeNetwork, HomeNetworkError};
use crate::changed::{Attr, Changed};

/// Most labels on one device.
pub const MAX_LABELS: usize = 64;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY: usize = 64;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 256;
/// Longest billing state or rate plan, in bytes.
pub const MAX_EXTERNAL_STRING: usize = 64;

/// Why a patch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalError {
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("label keys must not be empty")]
    EmptyLabelKey,
    #[error("label key {key:?}… is longer than {MAX_LABEL_KEY} bytes")]
    LabelKeyTooLong { key: String },
    #[error("value of label {key:?} is longer than {MAX_LABEL_VALUE} bytes")]
    LabelValueTooLong { key: String },
    #[error("a device may carry at most {MAX_LABELS} labels")]
    TooManyLabels,
    #[error(transparent)]
    HomeNetwork(#[from] HomeNetworkError),
}

/// A change to the operator's attributes of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalPatch {
    /// "active", "suspended", or any other state the billing system uses.
    #[serde(
        default,
        alias = "billing",
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub billing_state: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_plan: Option<Option<String>>,
    /// "MCC-MNC", e.g. "262-01"; overrides the fleet's home networks.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub home_network: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, Option<String>>>,
}

/// A field that is present, possibly as `null`: `Some(None)`. Absent fields
/// are `None` through `#[serde(default)]`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn short_key(key: &str) -> String {
    super::truncate(key, 32).to_string()
}

/// Checks one label; shared with reading attributes back from storage.
pub(super) fn check_label(key: &str, value: &str) -> Result<(), ExternalError> {
    if key.is_empty() {
        return Err(ExternalError::EmptyLabelKey);
    }
    if key.len() > MAX_LABEL_KEY {
        return Err(ExternalError::LabelKeyTooLong {
            key: short_key(key),
        });
    }
    if value.len() > MAX_LABEL_VALUE {
        return Err(ExternalError::LabelValueTooLong {
            key: short_key(key),
        });
    }
    Ok(())
}

pub(super) fn check_external_string(
    field: &'static str,
    v: Option<&str>,
) -> Result<(), ExternalError> {
    match v {
        Some(s) if s.len() > MAX_EXTERNAL_STRING => Err(ExternalError::TooLong {
            field,
            max: MAX_EXTERNAL_STRING,
        }),
        _ => Ok(()),
    }
}

impl Attributes {
    /// Applies an operator patch: a field left out stays, a field given as
    /// `null` is cleared; labels merge, a label given as `null` is removed.
    /// The patch is checked as a whole first, so a refused patch changes
    /// nothing. Roaming is rederived when the home network changes, with the
    /// fleet's home networks from `cx` for a device without one of its own.
    pub fn apply_external(
        &mut self,
        patch: &ExternalPatch,
        cx: &mut FleetContext<'_>,
    ) -> Result<Changed, ExternalError> {
        if let Some(b) = &patch.billing_state {
            check_external_string("billing_state", b.as_deref())?;
        }
        if let Some(r) = &patch.rate_plan {
            check_external_string("rate_plan", r.as_deref())?;
        }
        let home = match &patch.home_network {
            Some(Some(h)) => Some(Some(h.parse::<HomeNetwork>()?)),
            Some(None) => Some(None),
            None => None,
        };
        let labels = match &patch.labels {
            Some(changes) => Some(self.merged_labels(changes)?),
            None => None,
        };

        let mut changed = Changed::NONE;
        let d = self.detail_mut();
        if let Some(b) = &patch.billing_state {
            changed.note(Attr::Billing, set_shared(&mut d.billing, b.as_deref(), cx));
        }
        if let Some(r) = &patch.rate_plan {
            changed.note(
                Attr::RatePlan,
                set_shared(&mut d.rate_plan, r.as_deref(), cx),
            );
        }
        let home_moved = home.is_some_and(|h| replace(&mut d.home_network, h));
        if let Some(l) = labels {
            if *l != *d.labels {
                d.labels = l;
                changed.insert(Attr::Labels);
            }
        }
        if home_moved {
            changed.insert(Attr::HomeNetwork);
            changed |= self.rederive_roaming(cx);
        }
        self.trim_detail();
        Ok(changed)
    }

    fn merged_labels(
        &self,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<super::Labels, ExternalError> {
        let mut merged: BTreeMap<&str, &str> = self.labels().collect();
        for (k, v) in changes {
            match v {
                Some(v) => {
                    check_label(k, v)?;
                    merged.insert(k, v);
                }
                None => {
                    merged.remove(k.as_str());
                }
            }
        }
        if merged.len() > MAX_LABELS {
            return Err(ExternalError::TooManyLabels);
        }
        Ok(merged
            .into_iter()
            .map(|(k, v)| (Box::from(k), Box::from(v)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> ExternalPatch {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn absent_null_and_value_are_three_different_things() {
        let p = patch(r#"{"billing_state": "active", "rate_plan": null}"#);
        assert_eq!(p.billing_state, Some(Some("active".into())));
        assert_eq!(p.rate_plan, Some(None));
        assert_eq!(p.home_network, None);
        assert_eq!(p.labels, None);
        assert!(serde_json::from_str::<ExternalPatch>(r#"{"colour": "red"}"#).is_err());
        assert_eq!(
            patch(r#"{"billing": "x"}"#).billing_state,
            Some(Some("x".into()))
        );
    }

    #[test]
    fn patches_set_clear_and_merge() {
        let mut a = Attributes::new("d").unwrap();
        let mut cx = FleetContext::default();
        let c = a
            .apply_external(
                &patch(r#"{"billing_state": "active", "rate_plan": "iot-s", "labels": {"site": "hq", "fw-ring": "beta"}}"#),
                &mut cx,
            )
            .unwrap();
        assert_eq!(
            c.names().collect::<Vec<_>>(),
            ["billing", "rate_plan", "labels"]
        );
        assert_eq!(a.billing(), Some("active"));
        assert_eq!(a.label("site"), Some("hq"));

        let c = a
            .apply_external(
                &patch(r#"{"rate_plan": null, "labels": {"site": null, "owner": "ops"}}"#),
                &mut cx,
            )
            .unwrap();
        assert_eq!(c.names().collect::<Vec<_>>(), ["rate_plan", "labels"]);
        assert_eq!(a.rate_plan(), None);
        assert_eq!(a.billing(), Some("active"));
        assert_eq!(
            a.labels().collect::<Vec<_>>(),
            [("fw-ring", "beta"), ("owner", "ops")]
        );
        // Same again: nothing moves.
        let c = a
            .apply_external(
                &patch(r#"{"billing_state": "active", "labels": {"owner": "ops"}}"#),
                &mut cx,
            )
            .unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn home_network_drives_roaming() {
        let mut a = Attributes::new("d").unwrap();
        let fleet_home = ["262-01".parse().unwrap()];
        let mut cx = FleetContext {
            home_networks: &fleet_home,
            ..FleetContext::default()
        };
        a.apply_in(
            &"/4/0/10".parse().unwrap(),
            &lwm2m_objects::Value::Integer(208),
            &mut cx,
        );
        a.apply_in(
            &"/4/0/9".parse().unwrap(),
            &lwm2m_objects::Value::Integer(1),
            &mut cx,
        );
        assert!(a.roaming());
        let c = a
            .apply_external(&patch(r#"{"home_network": "208-01"}"#), &mut cx)
            .unwrap();
        assert_eq!(c.names().collect::<Vec<_>>(), ["roaming", "home_network"]);
        assert!(!a.roaming());
        assert_eq!(a.home_network().unwrap().to_string(), "208-01");
        let c = a
            .apply_external(&patch(r#"{"home_network": null}"#), &mut cx)
            .unwrap();
        assert_eq!(c.names().collect::<Vec<_>>(), ["roaming", "home_network"]);
        assert!(a.roaming());
    }

    #[test]
    fn limits_are_enforced_and_a_refused_patch_changes_nothing() {
        let mut a = Attributes::new("d").unwrap();
        let mut cx = FleetContext::default();
        let before = a.clone();
        let err = |a: &mut Attributes, p: ExternalPatch| {
            a.apply_external(&p, &mut FleetContext::default())
                .unwrap_err()
        };

        let long = "x".repeat(MAX_EXTERNAL_STRING + 1);
        let e = err(
            &mut a,
            ExternalPatch {
                rate_plan: Some(Some(long)),
                billing_state: Some(Some("active".into())),
                ..Default::default()
            },
        );
        assert_eq!(
            e,
            ExternalError::TooLong {
                field: "rate_plan",
                max: MAX_EXTERNAL_STRING
            }
        );
        assert_eq!(a, before);

        let e = err(
            &mut a,
            ExternalPatch {
                home_network: Some(Some("26201".into())),
                ..Default::default()
            },
        );
        assert_eq!(e, ExternalError::HomeNetwork(HomeNetworkError));

        let labels = |pairs: Vec<(String, Option<String>)>| ExternalPatch {
            labels: Some(pairs.into_iter().collect()),
            ..Default::default()
        };
        assert_eq!(
            err(&mut a, labels(vec![(String::new(), Some("v".into()))])),
            ExternalError::EmptyLabelKey
        );
        assert!(matches!(
            err(
                &mut a,
                labels(vec![("k".repeat(MAX_LABEL_KEY + 1), Some("v".into()))])
            ),
            ExternalError::LabelKeyTooLong { .. }
        ));
        assert!(matches!(
            err(
                &mut a,
                labels(vec![("k".into(), Some("v".repeat(MAX_LABEL_VALUE + 1)))])
            ),
            ExternalError::LabelValueTooLong { .. }
        ));
        let full: Vec<_> = (0..MAX_LABELS)
            .map(|i| (format!("k{i}"), Some("v".to_string())))
            .collect();
        a.apply_external(&labels(full), &mut cx).unwrap();
        assert_eq!(a.labels().len(), MAX_LABELS);
        let full = a.clone();
        assert_eq!(
            err(&mut a, labels(vec![("one-more".into(), Some("v".into()))])),
            ExternalError::TooManyLabels
        );
        assert_eq!(a, full);
        // Removing one makes room for another in the same patch.
        a.apply_external(
            &labels(vec![
                ("k0".into(), None),
                ("one-more".into(), Some("v".into())),
            ]),
            &mut cx,
        )
        .unwrap();
        assert_eq!(a.labels().len(), MAX_LABELS);
        assert_eq!(a.label("one-more"), Some("v"));
    }
}
