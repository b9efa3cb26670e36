//! People's accounts: roles, the networks' password rules, argon2id verifiers, lockout after
//! repeated failures, and the SQL on `region.db`'s `user` table.

mod attempt;
mod password;
mod role;
mod throttle;
mod users;

pub use attempt::{
    check_attempt, login, record_login, Check, Login, Strangers, STRANGERS_KEPT, VERIFICATIONS,
};
pub use password::{
    check_login, check_password, hash_password, needs_rehash, same_bytes, temporary_password,
    verify_password,
};
pub use role::Role;
pub use throttle::Throttle;
pub use users::{
    add, check_new_password, disable, enable, get, list, rehash, reset, set_password, Error, User,
};

/// Passwords expire after two months.
pub const PASSWORD_LIFETIME: i64 = 61 * 86_400;
/// The home page warns in the last two weeks.
pub const EXPIRY_NOTICE: i64 = 14 * 86_400;
/// From this many consecutive failures on, each answer is slowed down.
pub const SLOW_AFTER: i64 = 3;
/// At this many consecutive failures the account locks.
pub const LOCK_AFTER: i64 = 6;
/// How long a lock lasts; the office can lift it sooner with `user reset`.
pub const LOCK_FOR: i64 = 30 * 60;
