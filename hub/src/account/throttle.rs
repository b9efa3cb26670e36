//! The per-minute limit on login attempts, per terminal and per entrance, checked before any
//! password is hashed.

/// Login attempts per minute, whatever their outcome: at most `PER_TERMINAL` from one terminal
/// (a LAN browser as its appliance names it, or an address on the operators' listener) and
/// `PER_ENTRANCE` through one entrance (an appliance, the operators' listener). Every browser of a
/// clinic reaches the hub from one source, its appliance, so the terminal is the unit a guesser
/// is held to, and the entrance's limit holds a guesser who makes up terminal names. An attempt
/// over a limit is answered at once, before any password is hashed.
pub struct Throttle {
    /// key → (minute, attempts in that minute, attempts in the minute before it).
    counts: std::sync::Mutex<std::collections::HashMap<String, (i64, u32, u32)>>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            counts: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl Throttle {
    pub const PER_TERMINAL: u32 = 12;
    pub const PER_ENTRANCE: u32 = 120;
    /// At most this many keys are kept; at the cap, the past minutes' are forgotten first.
    pub const KEPT: usize = 20_000;

    /// Counts an attempt from `terminal` through `entrance` at `now`; false when either is over
    /// its limit for the minute up to `now` (the attempt is then not counted). The minute rolls:
    /// the minute before counts for the part of it still within 60 seconds (rounded up), so a
    /// guesser gains nothing at the turn of a clock minute.
    pub fn allow(&self, entrance: &str, terminal: &str, now: i64) -> bool {
        let minute = now.div_euclid(60);
        let left = 60 - now.rem_euclid(60) as u32;
        let mut m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let keys = [
            (format!("e|{entrance}"), Self::PER_ENTRANCE),
            (format!("t|{entrance}|{terminal}"), Self::PER_TERMINAL),
        ];
        // (this minute's attempts, the minute before's) as of `now`.
        let counts =
            |m: &std::collections::HashMap<String, (i64, u32, u32)>, k: &str| match m.get(k) {
                Some(&(at, cur, prev)) if at == minute => (cur, prev),
                Some(&(at, cur, _)) if at == minute - 1 => (0, cur),
                _ => (0, 0),
            };
        let used = |(cur, prev): (u32, u32)| cur + (prev * left).div_ceil(60);
        if keys.iter().any(|(k, limit)| used(counts(&m, k)) >= *limit) {
            return false;
        }
        if m.len() + 2 > Self::KEPT {
            m.retain(|_, (at, _, _)| *at >= minute - 1);
            if m.len() + 2 > Self::KEPT {
                m.clear();
            }
        }
        for (k, _) in keys {
            let (cur, prev) = counts(&m, &k);
            m.insert(k, (minute, cur + 1, prev));
        }
        true
    }

    pub fn len(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_throttled_per_terminal_and_per_entrance_and_the_map_stays_bounded() {
        let t = Throttle::default();
        let now = 1_800_000_000; // on a minute boundary (30,000,000 minutes)
        for _ in 0..Throttle::PER_TERMINAL {
            assert!(t.allow("3710000001/box-1", "box-1/t-a", now));
        }
        assert!(
            !t.allow("3710000001/box-1", "box-1/t-a", now + 5),
            "the terminal's 13th attempt in a minute"
        );
        assert!(
            t.allow("3710000001/box-1", "box-1/t-b", now + 5),
            "another terminal of the clinic still gets through"
        );
        assert!(
            t.allow("3710000002/box-1", "box-1/t-a", now + 5),
            "the same terminal name at another facility's appliance is another terminal"
        );
        assert!(
            !t.allow("3710000001/box-1", "box-1/t-a", now + 59),
            "the turn of the clock minute gives nothing back"
        );
        assert!(
            !t.allow("3710000001/box-1", "box-1/t-a", now + 60),
            "nor the first second of the next"
        );
        assert!(
            t.allow("3710000001/box-1", "box-1/t-a", now + 90),
            "half a minute on, half the budget is back"
        );
        for _ in 1..Throttle::PER_TERMINAL / 2 {
            assert!(t.allow("3710000001/box-1", "box-1/t-a", now + 90));
        }
        assert!(
            !t.allow("3710000001/box-1", "box-1/t-a", now + 90),
            "and no more than half"
        );
        assert!(
            t.allow("3710000001/box-1", "box-1/t-a", now + 240),
            "minutes later"
        );
        // Made-up terminal names do not get past the appliance's limit.
        let mut n = 0;
        for i in 0..1000 {
            if t.allow("3710000003/box-9", &format!("box-9/t-{i}"), now) {
                n += 1;
            }
        }
        assert_eq!(n, Throttle::PER_ENTRANCE);
        // However many terminals, the map is bounded.
        for i in 0..30_000 {
            t.allow(&format!("e{i}"), "x", now + 120);
        }
        assert!(t.len() <= Throttle::KEPT, "{}", t.len());
    }
}
