//! SS-MIX2 bytes to rows, with no I/O and no database: the appliance's ingest (`tsunagi-edge`)
//! reads files and stores what these give, and the fuzz targets in `fuzz/` feed them arbitrary
//! bytes without building SQLCipher.

pub mod hl7;
pub mod path;
pub mod record;
