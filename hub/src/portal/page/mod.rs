//! The pages every member of staff uses: login and logout, the password change, the home page,
//! patient search, and the patient page with its tabs, calendar, lab trend and document download.

mod calendar;
mod helpers;
mod home;
mod login;
mod patient;
mod search;
mod trend;

pub use calendar::calendar;
pub use helpers::urlencode;
pub use home::home;
pub use login::{login, login_form, logout, password, password_form};
pub use patient::{document, patient, PDF_CSP};
pub use search::search;
pub use trend::trend;
