//! Fleet inventory (no I/O): what the server knows about each device, the
//! operator's regions, CEL filters over device attributes, and dynamic groups
//! whose membership is kept current incrementally as devices change.
//!
//! [`Inventory`] ties it together: one call per device event updates the
//! [`Attributes`], what derives from them, and the [`Groups`], returning the
//! [`MembershipChange`]s a campaign reacts to.

pub mod attributes;
pub mod changed;
pub mod filter;
pub mod groups;
pub mod intern;
pub mod inventory;
pub mod regions;
pub mod versions;

pub use attributes::{
    Attributes, BearerKind, EndpointError, ExternalError, ExternalPatch, FleetContext, HomeNetwork,
    PowerSource,
};
pub use changed::{Attr, Changed};
pub use filter::{Filter, FilterError, FilterErrorKind};
pub use groups::{preview, GroupError, GroupInfo, Groups, MembersPage, MembershipChange};
pub use intern::Interner;
pub use inventory::{Inventory, InventoryConfig, InventoryError};
pub use regions::{BoundingBox, Region, RegionError, Regions, Shape};
