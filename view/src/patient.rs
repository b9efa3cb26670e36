//! The header every patient page opens with, on the hub's portal and in the appliance's offline
//! view: who the patient is (漢字 name large, カナ, 性別, 生年月日 in 和暦 and 西暦, 年齢), the IDs
//! each facility knows them by and why each is visible, and an allergy warning.

use askama::Template;

/// One facility's record of the patient, as the header lists it.
pub struct Holder {
    pub facility: String,
    pub patient_id: String,
    /// Why the viewer may see this facility's records (empty in the offline view: its own).
    pub basis: String,
}

/// The patient header. `Display` writes its HTML, escaped; a page embeds it with `|safe`.
#[derive(Template)]
#[template(path = "patient_header.html")]
pub struct Header {
    pub name_kanji: String,
    pub name_kana: String,
    pub sex: &'static str,
    /// `S41/06/06（1966/06/06）`, or the stored text when it is not a date.
    pub birth: String,
    /// `60歳5ヶ月`, or empty.
    pub age: String,
    pub regional_id: String,
    pub holders: Vec<Holder>,
    /// Allergens, each once, in the order first recorded.
    pub allergies: Vec<String>,
    /// Facilities whose allergies the viewer could not read (their records are visible as basic
    /// information only): the header says they were not checked, never "none".
    pub unchecked: Vec<String>,
    /// The viewer's role reads no clinical records: the header says so instead of "none".
    pub hidden_for_role: bool,
    /// What the facilities' registrations disagree on (氏名, 生年月日, 性別), said in the header.
    pub mismatch: Vec<&'static str>,
}

impl Header {
    /// The header of a patient whose name, sex (HL7: M, F, O) and birth date (`YYYYMMDD`) are
    /// these, on `today` (Japan time).
    pub fn new(
        name_kanji: &str,
        name_kana: &str,
        sex: &str,
        birth_date: &str,
        today: (i64, u32, u32),
    ) -> Header {
        let birth = crate::fmt::birth(birth_date);
        Header {
            name_kanji: if name_kanji.is_empty() {
                "（氏名未登録）".into()
            } else {
                name_kanji.to_string()
            },
            name_kana: crate::names::kana_shown(name_kana),
            sex: crate::fmt::sex_label(sex),
            birth,
            age: crate::fmt::age(birth_date, today).unwrap_or_default(),
            regional_id: String::new(),
            holders: Vec::new(),
            allergies: Vec::new(),
            unchecked: Vec::new(),
            hidden_for_role: false,
            mismatch: Vec::new(),
        }
    }

    /// Adds allergens not already listed.
    pub fn add_allergies(&mut self, found: impl IntoIterator<Item = String>) {
        for a in found {
            let a = a.trim().to_string();
            if !a.is_empty() && !self.allergies.contains(&a) {
                self.allergies.push(a);
            }
        }
    }

    /// For the page's `<title>`: the name and, when known, the regional ID.
    pub fn title(&self) -> String {
        if self.regional_id.is_empty() {
            self.name_kanji.clone()
        } else {
            format!("{}（{}）", self.name_kanji, self.regional_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_the_patient_and_escapes_what_it_shows() {
        let mut h = Header::new(
            "山田 <b>太郎</b>",
            "ヤマダ タロウ",
            "M",
            "19660606",
            (2026, 12, 2),
        );
        h.regional_id = "R0000000004".into();
        h.holders.push(Holder {
            facility: "つなぎ病院".into(),
            patient_id: "0001000022".into(),
            basis: "包括同意".into(),
        });
        h.add_allergies(["ペニシリン".to_string(), "ペニシリン".into(), " 卵 ".into()]);
        let html = h.to_string();
        assert!(
            html.contains("山田 &#60;b&#62;太郎&#60;/b&#62;") || html.contains("山田 &lt;b&gt;"),
            "{html}"
        );
        assert!(html.contains("S41/06/06（1966/06/06）"), "{html}");
        assert!(html.contains("60歳5ヶ月"), "{html}");
        assert!(html.contains("アレルギーあり: ペニシリン、卵"), "{html}");
        assert!(
            html.contains("0001000022") && html.contains("包括同意"),
            "{html}"
        );
        assert_eq!(h.title(), "山田 <b>太郎</b>（R0000000004）");
        let none = Header::new("", "", "", "", (2026, 12, 2)).to_string();
        assert!(
            none.contains("（氏名未登録）") && !none.contains("id=\"ph-allergy\""),
            "{none}"
        );
        assert!(
            none.contains("アレルギー登録なし"),
            "silence never reads as none: {none}"
        );
        let mut clerk = Header::new("山田", "", "M", "19660606", (2026, 12, 2));
        clerk.hidden_for_role = true;
        assert!(clerk.to_string().contains("この職種では表示されません"));
        let mut basic = Header::new("山田", "", "M", "19660606", (2026, 12, 2));
        basic.unchecked.push("さぬき中央病院".into());
        basic.mismatch.push("生年月日");
        let html = basic.to_string();
        assert!(
            html.contains("未確認（さぬき中央病院") && !html.contains("登録なし"),
            "{html}"
        );
        assert!(
            html.contains("施設間で登録内容が異なります（生年月日）"),
            "{html}"
        );
    }
}
