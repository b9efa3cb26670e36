//! Posture checks on the appliance (the policy work). So far: the Wi-Fi classifier.

pub mod wifi;
