//! CNI wire types (no IO): network configuration, configuration lists,
//! results in every supported version, VERSION results.
//!
//! Unknown fields are kept: [`NetConf::plugin`] holds every key the spec does
//! not define, so a configuration round-trips unchanged and plugin-specific
//! settings can be decoded later by the plugin that owns them.

mod config;
mod result;

pub use config::{ConfList, Dns, IpamConf, NetConf, ValidAttachment, valid_name};
pub use result::{CniResult, Interface, IpConfig, Route, VersionResult};
