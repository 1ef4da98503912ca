//! Voice scores of a udp-jitter operation run with a codec: ICPIF and MOS.
//!
//! Two models, chosen per operation:
//!
//! - [`MosModel::EModel`] (standards-based). ITU-T G.107 E-model with default values:
//!   R = 93.2 − Id − Ie,eff + A (G.107 §7, R0 − Is = 93.2 with every other parameter at its
//!   default). Id uses the simplified delay impairment of Cole & Rosenbluth ("Voice over IP
//!   performance monitoring", ACM CCR 2001), Id = 0.024·Ta + 0.11·(Ta − 177.3)·H(Ta − 177.3),
//!   which fits G.107's Idd for default echo settings. Ie,eff = Ie + (95 − Ie)·Ppl/(Ppl/BurstR + Bpl)
//!   (G.107 §7.5, BurstR = 1: random loss), with Ie and Bpl from G.113 Appendix I (G.711 with
//!   packet-loss concealment: Ie 0, Bpl 25.1; G.729A: Ie 11, Bpl 19.0). MOS from R by G.107
//!   Annex B. ICPIF is reported as Id + Ie,eff − A (G.113's Icpif with Io = Iq = Idte = 0, as IP SLA
//!   sets them).
//! - [`MosModel::CiscoCompat`] (approximation). Cisco computes ICPIF = Idd + Ie − A from tables it
//!   only partly publishes. Idd interpolates Cisco's published sample points (one-way delay 50 ms →
//!   1, 100 → 2, 150 → 4, 200 → 7) and follows the Cole–Rosenbluth slope beyond them; Ie
//!   interpolates the per-codec "measured packet loss → equipment impairment" table as recalled in
//!   the reference (G.711: 2/4/6/8 % → 12/22/28/32; G.729A: 0 % → 11, 2/4/6/8 % → 20/30/38/42),
//!   which is **not confirmed** against a device. MOS is G.107 Annex B of R = 93.2 − ICPIF.
//!
//! Both follow the CISCO-RTTMON-MIB rule: at ≥ 10 % loss, ICPIF = 93 and MOS = 1.
//! One-way delay for the delay impairment is RTT/2 plus the codec's algorithmic delay (G.711: 0;
//! G.729A: 15 ms, 10 ms frame + 5 ms look-ahead, G.729 §2), since IP SLA estimates Idd from RTT.

use serde::{Deserialize, Serialize};

/// Codecs IP SLA emulates (IOS `udp-jitter ... codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// G.711 A-law.
    G711alaw,
    /// G.711 µ-law.
    G711ulaw,
    /// G.729A.
    G729a,
}

impl Codec {
    /// Default packet size in bytes (payload + 12-byte RTP header), CLI defaults.
    pub fn default_size(self) -> usize {
        match self {
            Codec::G711alaw | Codec::G711ulaw => 172,
            Codec::G729a => 32,
        }
    }
    /// Default interval, ms.
    pub fn default_interval_ms(self) -> u32 {
        20
    }
    /// Default number of packets.
    pub fn default_packets(self) -> u32 {
        1000
    }
    /// G.113 Appendix I equipment impairment and packet-loss robustness.
    fn ie_bpl(self) -> (f64, f64) {
        match self {
            Codec::G711alaw | Codec::G711ulaw => (0.0, 25.1),
            Codec::G729a => (11.0, 19.0),
        }
    }
    /// Algorithmic delay, ms.
    fn codec_delay_ms(self) -> f64 {
        match self {
            Codec::G711alaw | Codec::G711ulaw => 0.0,
            Codec::G729a => 15.0,
        }
    }
    /// Cisco-compat loss % → Ie table (recalled, unconfirmed).
    fn cisco_ie_table(self) -> &'static [(f64, f64)] {
        match self {
            Codec::G711alaw | Codec::G711ulaw => &[(0.0, 0.0), (2.0, 12.0), (4.0, 22.0), (6.0, 28.0), (8.0, 32.0)],
            Codec::G729a => &[(0.0, 11.0), (2.0, 20.0), (4.0, 30.0), (6.0, 38.0), (8.0, 42.0)],
        }
    }
}

/// Which way to turn measurements into scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MosModel {
    /// ITU-T G.107 E-model (standards-based).
    #[default]
    EModel,
    /// Approximation of Cisco's unpublished tables.
    CiscoCompat,
}

/// The scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VoiceScore {
    /// Calculated Planning Impairment Factor, 0..=93.
    pub icpif: u32,
    /// Mean Opinion Score, 1.00..=4.50 (two decimals, as IOS prints).
    pub mos: f64,
    /// The E-model rating factor behind the MOS.
    pub r_factor: f64,
}

/// G.107 Annex B: R → MOS.
pub fn mos_from_r(r: f64) -> f64 {
    if r < 0.0 {
        1.0
    } else if r > 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
    }
}

/// Cole–Rosenbluth delay impairment for one-way delay `ta` ms.
fn id_cole_rosenbluth(ta: f64) -> f64 {
    0.024 * ta + if ta > 177.3 { 0.11 * (ta - 177.3) } else { 0.0 }
}

fn interpolate(table: &[(f64, f64)], x: f64) -> f64 {
    let (first, last) = (table[0], table[table.len() - 1]);
    if x <= first.0 {
        return first.1;
    }
    for w in table.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x <= x1 {
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0);
        }
    }
    // beyond the table: continue the last segment's slope
    let (x0, y0) = table[table.len() - 2];
    last.1 + (last.1 - y0) / (last.0 - x0) * (x - last.0)
}

fn idd_cisco(ta: f64) -> f64 {
    const POINTS: [(f64, f64); 5] = [(0.0, 0.0), (50.0, 1.0), (100.0, 2.0), (150.0, 4.0), (200.0, 7.0)];
    if ta <= 200.0 { interpolate(&POINTS, ta) } else { 7.0 + id_cole_rosenbluth(ta) - id_cole_rosenbluth(200.0) }
}

/// Scores for an operation with average RTT `rtt_avg_ms`, packet loss `loss_pct` (0..100) and
/// advantage factor `a` (0..=20).
pub fn score(codec: Codec, model: MosModel, rtt_avg_ms: f64, loss_pct: f64, a: f64) -> VoiceScore {
    if loss_pct >= 10.0 {
        // CISCO-RTTMON-MIB: MOS is 1 (100) and ICPIF 93 when loss is 10 % or more.
        return VoiceScore { icpif: 93, mos: 1.0, r_factor: 0.0 };
    }
    let ta = rtt_avg_ms.max(0.0) / 2.0 + codec.codec_delay_ms();
    let (impairment, r) = match model {
        MosModel::EModel => {
            let (ie, bpl) = codec.ie_bpl();
            let ie_eff = ie + (95.0 - ie) * loss_pct / (loss_pct + bpl);
            let id = id_cole_rosenbluth(ta);
            (id + ie_eff - a, 93.2 - id - ie_eff + a)
        }
        MosModel::CiscoCompat => {
            let icpif = (idd_cisco(ta) + interpolate(codec.cisco_ie_table(), loss_pct) - a).round().max(0.0);
            (icpif, 93.2 - icpif)
        }
    };
    let icpif = impairment.round().clamp(0.0, 93.0) as u32;
    let mos = (mos_from_r(r) * 100.0).round() / 100.0;
    VoiceScore { icpif, mos, r_factor: r }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed by hand from the formulas in the module documentation.

    #[test]
    fn emodel_g711() {
        // RTT 300 ms → Ta 150: Id 3.6; 2 % loss: Ie,eff = 95·2/27.1 = 7.0111; R = 82.589; MOS 4.118
        let s = score(Codec::G711alaw, MosModel::EModel, 300.0, 2.0, 0.0);
        assert!((s.r_factor - 82.588_93).abs() < 1e-4, "{}", s.r_factor);
        assert_eq!(s.mos, 4.12);
        assert_eq!(s.icpif, 11);
        // a clean path: R 93.188, MOS 4.41
        let s = score(Codec::G711ulaw, MosModel::EModel, 1.0, 0.0, 0.0);
        assert_eq!((s.icpif, s.mos), (0, 4.41));
    }

    #[test]
    fn emodel_g729a_with_advantage() {
        // RTT 500 → Ta 250 + 15 = 265: Id = 6.36 + 0.11·87.7 = 16.007; 5 % loss:
        // Ie,eff = 11 + 84·5/24 = 28.5; A 5 → R = 93.2 − 16.007 − 28.5 + 5 = 53.693, MOS 2.77
        let s = score(Codec::G729a, MosModel::EModel, 500.0, 5.0, 5.0);
        assert!((s.r_factor - 53.693).abs() < 1e-6, "{}", s.r_factor);
        assert_eq!(s.mos, 2.77);
        assert_eq!(s.icpif, 40);
    }

    #[test]
    fn ten_percent_loss_is_the_floor() {
        for m in [MosModel::EModel, MosModel::CiscoCompat] {
            let s = score(Codec::G711alaw, m, 10.0, 10.0, 20.0);
            assert_eq!((s.icpif, s.mos), (93, 1.0));
        }
    }

    #[test]
    fn cisco_compat_tables() {
        // one-way 100 ms (RTT 200) → Idd 2; 4 % loss → Ie 22; ICPIF 24; R 69.2 → MOS 3.56
        let s = score(Codec::G711alaw, MosModel::CiscoCompat, 200.0, 4.0, 0.0);
        assert_eq!(s.icpif, 24);
        assert_eq!(s.mos, 3.56);
        // G.729A loss-free, one-way 75 + 15 = 90 ms → Idd 1.8, Ie 11 → ICPIF 13
        assert_eq!(score(Codec::G729a, MosModel::CiscoCompat, 150.0, 0.0, 0.0).icpif, 13);
        // 3 % G.711: halfway between 12 and 22
        assert_eq!(score(Codec::G711ulaw, MosModel::CiscoCompat, 0.0, 3.0, 0.0).icpif, 17);
    }

    #[test]
    fn scores_fall_as_impairment_rises() {
        for m in [MosModel::EModel, MosModel::CiscoCompat] {
            let mut last = 5.0;
            for (rtt, loss) in [(10.0, 0.0), (100.0, 0.5), (200.0, 1.0), (300.0, 3.0), (500.0, 6.0), (800.0, 9.0)] {
                let s = score(Codec::G711alaw, m, rtt, loss, 0.0);
                assert!(s.mos < last, "{m:?} {rtt} {loss}: {} !< {last}", s.mos);
                last = s.mos;
            }
        }
    }

    #[test]
    fn mos_bounds() {
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
        assert!((mos_from_r(90.0) - 4.339).abs() < 1e-3);
    }
}
