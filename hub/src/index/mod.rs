//! The regional patient index (名寄せ): every patient of every facility's copy, with normalized
//! names for search and matching, and the regional patient ID that confirmed links share. Also the
//! search itself, limited to what the searching facility may see.

mod entries;
mod linking;
mod query;

pub use view::names::{kana_norm, kanji_norm};

pub use entries::{
    by_facility_pid, by_regional, catch_up, changed_in_copy, get, indexed_up_to, new_regional_id,
    upsert, Demographics, Entry,
};
pub use linking::{link, proposals, reject, unlink};
pub use query::{search, Query, Scope, MAX_RESULTS};

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    pub(super) fn demo(
        pid: &str,
        fk: &str,
        gk: &str,
        fa: &str,
        ga: &str,
        birth: &str,
        sex: &str,
    ) -> Demographics {
        Demographics {
            patient_id: pid.into(),
            family_kanji: fk.into(),
            given_kanji: gk.into(),
            family_kana: fa.into(),
            given_kana: ga.into(),
            birth_date: birth.into(),
            sex: sex.into(),
        }
    }

    #[test]
    fn kana_normalizes_half_width_hiragana_and_spaces() {
        assert_eq!(kana_norm("ﾔﾏﾀﾞ ﾀﾛｳ"), "ヤマダタロウ");
        assert_eq!(kana_norm("やまだ　たろう"), "ヤマダタロウ");
        assert_eq!(kana_norm("ﾊﾟﾝ ﾎﾟﾎﾟ"), "パンポポ");
        assert_eq!(kana_norm("ｳﾞｨｰﾅｽ"), "ヴィーナス");
        assert_eq!(kana_norm("ｻｲﾄｳ"), "サイトウ");
        assert_eq!(kana_norm("ﾂﾞｯﾄ"), "ヅット");
        assert_eq!(kanji_norm("山田　太郎"), "山田太郎");
    }

    pub(super) fn setup() -> Connection {
        let c = crate::region::memory();
        c.execute_batch("").unwrap();
        upsert(
            &c,
            "3710000001",
            &demo("0001", "山田", "太郎", "ﾔﾏﾀﾞ", "ﾀﾛｳ", "19600101", "M"),
            0,
        )
        .unwrap();
        upsert(
            &c,
            "3710000002",
            &demo("A-77", "山田", "太郎", "ヤマダ", "タロウ", "19600101", "M"),
            0,
        )
        .unwrap();
        upsert(
            &c,
            "3710000002",
            &demo("A-78", "山田", "花子", "ヤマダ", "ハナコ", "19620202", "F"),
            0,
        )
        .unwrap();
        upsert(
            &c,
            "3710000003",
            &demo("9", "林", "翔", "ハヤシ", "ショウ", "19900303", "M"),
            0,
        )
        .unwrap();
        c
    }

    pub(super) fn ids(v: &[Entry]) -> Vec<String> {
        let mut out: Vec<String> = v
            .iter()
            .map(|e| format!("{}/{}", e.facility, e.patient_id))
            .collect();
        out.sort();
        out
    }
}
