//! The filter variables of one device, made on demand.
//!
//! cel asks the resolver for a variable each time the expression reads it,
//! so only the variables a filter uses are built, and strings are handed to
//! cel borrowed from the attributes, without a copy. Nothing is built per
//! evaluation beyond that.

use std::collections::HashMap;

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;

use crate::attributes::Attributes;
use crate::changed::Attr;

pub(super) struct Vars<'a>(pub &'a Attributes);

fn null<'b>() -> CowVal<'b, 'b> {
    CowVal::owned(CelNull)
}

fn string(v: Option<&str>) -> CowVal<'_, '_> {
    v.map_or_else(null, |s| CowVal::owned(CelString::from(s)))
}

fn int<'b>(v: Option<i64>) -> CowVal<'b, 'b> {
    v.map_or_else(null, |i| CowVal::owned(CelInt::from(i)))
}

fn boolean<'b>(v: Option<bool>) -> CowVal<'b, 'b> {
    v.map_or_else(null, |b| CowVal::owned(CelBool::from(b)))
}

fn float<'b>(v: Option<f64>) -> CowVal<'b, 'b> {
    v.map_or_else(null, |f| CowVal::owned(CelDouble::from(f)))
}

fn ints<'b>(v: impl Iterator<Item = i64>) -> CowVal<'b, 'b> {
    let items: Vec<Box<dyn Val + 'b>> = v
        .map(|i| Box::new(CelInt::from(i)) as Box<dyn Val + 'b>)
        .collect();
    CowVal::owned(CelList::from(items))
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let a = self.0;
        let attr = Attr::from_name(variable).filter(|a| a.is_filter_variable())?;
        Some(match attr {
            Attr::Endpoint => string(Some(a.endpoint())),
            Attr::Manufacturer => string(a.manufacturer()),
            Attr::Model => string(a.model()),
            Attr::Serial => string(a.serial()),
            Attr::Firmware => string(a.firmware()),
            Attr::Hardware => string(a.hardware()),
            Attr::Software => string(a.software()),
            Attr::DeviceType => string(a.device_type()),
            Attr::Lwm2mVersion => string(a.lwm2m_version()),
            Attr::Objects => ints(a.objects().map(|(id, _)| i64::from(id))),
            Attr::Protocols => ints(a.protocols().into_iter().map(i64::from)),
            Attr::Delivery => int(a.delivery().map(i64::from)),
            Attr::Online => boolean(a.online()),
            Attr::Awake => boolean(a.awake()),
            Attr::QueueMode => boolean(a.queue_mode()),
            Attr::NextWake => int(a.next_wake_unix_ms()),
            Attr::LastSeen => int(a.last_seen_unix_ms()),
            Attr::Bearer => string(a.bearer().map(|b| b.as_str())),
            Attr::BearerCode => int(a.bearer_code().map(i64::from)),
            Attr::HasWifi => boolean(a.has_wifi()),
            Attr::Signal => int(a.signal_dbm().map(i64::from)),
            Attr::LinkQuality => int(a.link_quality().map(i64::from)),
            Attr::CellId => int(a.cell_id()),
            Attr::Mcc => int(a.mcc().map(i64::from)),
            Attr::Mnc => int(a.mnc().map(i64::from)),
            Attr::Roaming => boolean(Some(a.roaming())),
            Attr::Lat => float(a.lat()),
            Attr::Lon => float(a.lon()),
            Attr::Region => string(a.region()),
            Attr::Battery => int(a.battery().map(i64::from)),
            Attr::OnMains => boolean(a.on_mains()),
            Attr::Billing => string(a.billing()),
            Attr::RatePlan => string(a.rate_plan()),
            Attr::Labels => {
                let map: HashMap<CelMapKey<'b>, Box<dyn Val + 'b>> = a
                    .labels()
                    .map(|(k, v)| {
                        (
                            CelMapKey::from(k),
                            Box::new(CelString::from(v)) as Box<dyn Val + 'b>,
                        )
                    })
                    .collect();
                CowVal::owned(CelMap::from(map))
            }
            Attr::AvailableBearers | Attr::HomeNetwork | Attr::PowerSources => return None,
        })
    }
}
