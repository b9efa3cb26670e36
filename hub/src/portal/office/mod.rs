//! The pages of the network office and the facility administrators: consent and publication,
//! patient linking, emergency access, the inbox, the access history with its CSV downloads, and
//! staff accounts.

mod consent;
mod emergency;
mod history;
mod inbox;
mod links;
mod users;

pub use consent::{consent, consent_form};
pub use emergency::{emergency, emergency_end, emergency_form};
pub use history::{history, history_csv, CSV_HEADER};
pub use inbox::inbox;
pub use links::{link_action, links};
pub use users::{user_action, user_add, users};
