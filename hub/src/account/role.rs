//! The roles a person's account has: their codes and labels, and what each may do.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Office,
    FacilityAdmin,
    Doctor,
    Nurse,
    Pharmacist,
    Clerk,
    Operator,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Office,
        Role::FacilityAdmin,
        Role::Doctor,
        Role::Nurse,
        Role::Pharmacist,
        Role::Clerk,
        Role::Operator,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Role::Office => "office",
            Role::FacilityAdmin => "facility-admin",
            Role::Doctor => "doctor",
            Role::Nurse => "nurse",
            Role::Pharmacist => "pharmacist",
            Role::Clerk => "clerk",
            Role::Operator => "operator",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Office => "事務局",
            Role::FacilityAdmin => "施設管理者",
            Role::Doctor => "医師",
            Role::Nurse => "看護師",
            Role::Pharmacist => "薬剤師",
            Role::Clerk => "事務",
            Role::Operator => "運用担当",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.code() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}: use one of {}",
                    Role::ALL
                        .iter()
                        .map(|r| r.code())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// Roles that belong to a facility (the others belong to the network).
    pub fn in_facility(self) -> bool {
        !matches!(self, Role::Office | Role::Operator)
    }

    /// Roles that may read clinical records (clerks see basic information only).
    pub fn clinical(self) -> bool {
        matches!(
            self,
            Role::FacilityAdmin | Role::Doctor | Role::Nurse | Role::Pharmacist
        )
    }

    /// Roles that may start an emergency access at a core hospital, and for whom their own
    /// access then counts: the clinical professions, not administrators or clerks.
    pub fn breaks_glass(self) -> bool {
        matches!(self, Role::Doctor | Role::Nurse | Role::Pharmacist)
    }

    /// Roles that may open patient records at all.
    pub fn views_patients(self) -> bool {
        self.in_facility()
    }
}
