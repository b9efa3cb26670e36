//! The tsunagi hub: failover copies, the regional patient index, consent, the portal, the fleet
//! view and the audit trail. Nothing here yet: it arrives with the sync issue (enrolment, the
//! ingest API and failover copies), built on the outbox the edge already writes.
#![forbid(unsafe_code)]
