//! Test support for tsunagi: the synthetic SS-MIX2 generator and helpers that run the real binaries.
#![forbid(unsafe_code)]

pub mod gen;
pub mod run;
