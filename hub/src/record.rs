//! The patient page's records, from `view::record` (shared with the appliance's offline view).
pub use view::record::*;
