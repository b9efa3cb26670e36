//! The network's certificate authority, enrolment, renewal and revocation, shared by the edge and
//! the hub. Nothing here yet: it arrives with the sync issue.
#![forbid(unsafe_code)]
