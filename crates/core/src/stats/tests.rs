//! Hand-computed scenarios: every expected number below was worked out on paper from the
//! definitions in the module documentation.

use super::*;
use proptest::prelude::*;

const US: i64 = 1000;

fn s(seq: u32, responder_seq: u32, rtt_us: i64, sd_us: i64, ds_us: i64) -> Sample {
    Sample { seq, responder_seq, rtt: rtt_us * US, sd: sd_us * US, ds: ds_us * US, ..Sample::default() }
}

fn cfg(sync: bool) -> StatsConfig {
    StatsConfig { threshold: 2000 * US, clock_sync: sync, responder_counts: true }
}

/// 10 probes: seq 3 lost on the way out, seq 6 lost on the way back, seq 10 never answered.
fn scenario_a() -> Vec<Sample> {
    vec![
        s(1, 1, 1000, 500, 500),
        s(2, 2, 1200, 700, 500),
        s(4, 3, 900, 400, 500),
        s(5, 4, 1500, 900, 600),
        s(7, 6, 1100, 500, 600),
        s(8, 7, 1100, 600, 500),
        s(9, 8, 3000, 2000, 1000),
    ]
}

#[test]
fn rtt_threshold_and_percentiles() {
    let st = compute(10, &scenario_a(), cfg(false));
    assert_eq!((st.sent, st.received), (10, 7));
    assert_eq!(st.rtt.count, 7);
    assert_eq!((st.rtt.min, st.rtt.max), (900 * US, 3000 * US));
    assert_eq!(st.rtt.sum, 9800 * i128::from(US));
    assert_eq!(st.rtt.sum2, 16_920_000 * i128::from(US) * i128::from(US));
    assert_eq!(st.rtt.avg(), 1_400_000.0);
    assert_eq!(st.over_threshold, 1);
    assert_eq!(st.rtt_pct, Some(Percentiles { p50: 1100 * US, p90: 3000 * US, p99: 3000 * US }));
    // |ΔRTT| in sequence order: 200, 300, 600, 400, 0, 1900
    assert_eq!(st.ipdv_pct, Some(Percentiles { p50: 300 * US, p90: 1900 * US, p99: 1900 * US }));
}

#[test]
fn loss_by_direction() {
    let st = compute(10, &scenario_a(), cfg(false));
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia, st.tail_drop), (1, 1, 1, 1));
    assert_eq!(st.periods_sd, LossPeriods { count: 1, len_min: 1, len_max: 1, inter_min: 0, inter_max: 0 });
    assert_eq!(st.periods_ds, LossPeriods { count: 1, len_min: 1, len_max: 1, inter_min: 0, inter_max: 0 });
    assert!((st.loss_ratio() - 0.3).abs() < 1e-12);
}

#[test]
fn jitter_split_by_sign_and_interarrival() {
    let st = compute(10, &scenario_a(), cfg(false));
    // SD transit 500,700,400,900,500,600,2000 → +200 −300 +500 −400 +100 +1400
    let sd = st.jitter_sd;
    assert_eq!((sd.positive.count, sd.positive.min, sd.positive.max), (4, 100 * US, 1400 * US));
    assert_eq!(sd.positive.sum, 2200 * i128::from(US));
    assert_eq!((sd.negative.count, sd.negative.min, sd.negative.max), (2, 300 * US, 400 * US));
    assert_eq!(sd.negative.sum, 700 * i128::from(US));
    assert!((sd.avg() - 2_900_000.0 / 6.0).abs() < 1e-6);
    // J += (|D| − J)/16 over 200,300,500,400,100,1400 µs
    assert!((sd.interarrival - 164_617.621_898_651_12).abs() < 1e-6, "{}", sd.interarrival);
    // DS transit 500,500,500,600,600,500,1000 → 0 0 +100 0 −100 +500: zero counts as positive
    let ds = st.jitter_ds;
    assert_eq!((ds.positive.count, ds.positive.min, ds.positive.max), (5, 0, 500 * US));
    assert_eq!((ds.negative.count, ds.negative.max), (1, 100 * US));
    assert!((ds.avg() - 700_000.0 / 6.0).abs() < 1e-6);
    assert!((st.jitter_avg() - 3_600_000.0 / 12.0).abs() < 1e-6);
}

#[test]
fn one_way_only_with_synchronised_clocks() {
    let st = compute(10, &scenario_a(), cfg(false));
    assert_eq!(st.one_way_sd, None, "unavailable, never 0");
    assert_eq!(st.one_way_ds, None);
    let st = compute(10, &scenario_a(), cfg(true));
    let sd = st.one_way_sd.unwrap();
    assert_eq!((sd.count, sd.min, sd.max, sd.sum), (7, 400 * US, 2000 * US, 5600 * i128::from(US)));
    let ds = st.one_way_ds.unwrap();
    assert_eq!((ds.min, ds.max, ds.sum), (500 * US, 1000 * US, 4200 * i128::from(US)));
    // SD sorted 400 500 500 600 700 900 2000: p50 = 4th = 600
    assert_eq!(st.one_way_pct.unwrap().0.p50, 600 * US);
}

#[test]
fn burst_loss_periods() {
    // 20 probes: SD burst 5,6,7; DS loss 12; SD loss 15; 19 and 20 unanswered.
    let answered = [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
        (8, 5),
        (9, 6),
        (10, 7),
        (11, 8),
        (13, 10),
        (14, 11),
        (16, 12),
        (17, 13),
        (18, 14),
    ];
    let arrivals: Vec<Sample> = answered.iter().map(|&(q, r)| s(q, r, 1000, 500, 500)).collect();
    let st = compute(20, &arrivals, cfg(false));
    assert_eq!(st.received, 13);
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia, st.tail_drop), (4, 1, 2, 2));
    assert_eq!(st.periods_sd, LossPeriods { count: 2, len_min: 1, len_max: 3, inter_min: 7, inter_max: 7 });
    assert_eq!(st.periods_ds, LossPeriods { count: 1, len_min: 1, len_max: 1, inter_min: 0, inter_max: 0 });
    // constant transit: every jitter value is 0 (positive)
    assert_eq!(st.jitter_sd.positive.count, 12);
    assert_eq!(st.jitter_sd.negative.count, 0);
}

#[test]
fn reorder_duplicate_and_late() {
    let mut late = s(5, 5, 9000, 4500, 4500);
    late.late = true;
    // reply 1 arrives twice (duplicated on the way back: same responder counter)
    let dup = Sample { duplicate: true, ..s(1, 1, 1000, 500, 500) };
    let arrivals = vec![
        s(1, 1, 1000, 500, 500),
        dup,
        s(3, 2, 1000, 500, 500),
        s(2, 3, 1000, 500, 500),
        s(4, 4, 1000, 500, 500),
        late,
    ];
    let st = compute(5, &arrivals, cfg(false));
    assert_eq!(st.out_of_sequence, 1);
    assert_eq!(st.duplicates, 1);
    assert_eq!(st.late, 1);
    assert_eq!(st.received, 4);
    assert_eq!(st.rtt.max, 1000 * US, "late reply kept out of the RTT");
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia), (0, 0, 0), "a late reply is not a loss");
}

#[test]
fn nothing_answered_is_all_mia() {
    let st = compute(10, &[], cfg(true));
    assert_eq!((st.received, st.loss_mia, st.tail_drop), (0, 10, 10));
    assert_eq!(st.rtt.count, 0);
    assert_eq!(st.one_way_sd.unwrap().count, 0);
    // nothing measured: no mean, no percentile, no jitter, rather than zeros that read as perfect
    assert_eq!(
        (st.rtt.mean(), st.rtt.min_max(), st.rtt_pct, st.ipdv_pct, st.one_way_pct),
        (None, None, None, None, None)
    );
    assert_eq!((st.jitter_mean(), st.jitter_sd.mean(), st.jitter_ds.interarrival()), (None, None, None));
    // one reply: an RTT, but no difference between two packets
    let one = compute(10, &scenario_a()[..1], cfg(false));
    assert_eq!((one.rtt.mean(), one.rtt_pct.map(|p| p.p50)), (Some(1_000_000.0), Some(1_000_000)));
    assert_eq!((one.ipdv_pct, one.jitter_mean()), (None, None));
}

#[test]
fn without_responder_counter_every_loss_is_mia() {
    let st = compute(10, &scenario_a(), StatsConfig { responder_counts: false, ..cfg(false) });
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia), (0, 0, 3));
}

#[test]
fn duplicated_on_the_way_out_does_not_hide_an_sd_loss() {
    // Probe 1 duplicated towards the responder (counter 1 and 2), probe 3 lost on the way out:
    // replies p1 (r1), p1 copy (r2), p2 (r3), p4 (r4). Without the copy's counter, the gap at 3
    // would look like a DS loss.
    let mut copy = s(1, 2, 1000, 500, 500);
    copy.duplicate = true;
    let arrivals = vec![s(1, 1, 1000, 500, 500), copy, s(2, 3, 1000, 500, 500), s(4, 4, 1000, 500, 500)];
    let st = compute(4, &arrivals, cfg(false));
    assert_eq!((st.duplicates, st.received), (1, 3));
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia), (1, 0, 0));
}

#[test]
fn a_counter_kept_from_an_earlier_run_still_splits() {
    // A stateful STAMP session outlives a run when the source port is fixed: the counter goes on
    // from the last run's 300. Scenario A's gaps split as before.
    let shifted: Vec<Sample> =
        scenario_a().into_iter().map(|x| Sample { responder_seq: x.responder_seq + 300, ..x }).collect();
    let st = compute(10, &shifted, cfg(false));
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia), (1, 1, 1));
    // without probe 1's reply, the 300 earlier values cannot be told from probe 1's fate: MIA
    let st = compute(10, &shifted[1..], cfg(false));
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia), (1, 1, 2));
}

#[test]
fn a_responder_that_restarts_its_counter_leaves_the_direction_unknown() {
    // counters 1, 2, then from 1 again after probe 3 (lost on the way out): one value twice
    let arrivals = vec![s(1, 1, 10, 5, 5), s(2, 2, 10, 5, 5), s(4, 1, 10, 5, 5), s(6, 3, 10, 5, 5)];
    let st = compute(6, &arrivals, cfg(false));
    assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia), (0, 0, 2));
}

#[test]
fn hostile_counters_do_not_panic() {
    // Found in review: a responder counter of u32::MAX overflowed the gap walk.
    let arrivals = vec![s(1, u32::MAX, 10, 5, 5), s(3, 1, 10, 5, 5), s(2, 0, 10, 5, 5)];
    let st = compute(3, &arrivals, cfg(false));
    assert_eq!(st.received, 3);
    assert_eq!(st.loss_sd + st.loss_ds + st.loss_mia, 0);
    let st = compute(5, &[s(5, u32::MAX, 10, 5, 5)], cfg(false));
    assert_eq!(st.loss_sd + st.loss_ds + st.loss_mia, 4);
}

#[derive(Debug, Clone, Copy)]
enum Fate {
    Ok,
    LostOut,
    LostBack,
    Late,
}

proptest! {
    /// Simulated operations with known per-packet fates: the direction split equals the truth
    /// before the last reply; everything after it is MIA; the totals add up.
    #[test]
    fn loss_split_matches_truth(fates in proptest::collection::vec(prop_oneof![
        6 => Just(Fate::Ok), 2 => Just(Fate::LostOut), 2 => Just(Fate::LostBack), 1 => Just(Fate::Late)], 1..200)) {
        let sent = fates.len() as u32;
        let mut r = 0;
        let mut arrivals = Vec::new();
        for (i, f) in fates.iter().enumerate() {
            let seq = i as u32 + 1;
            match f {
                Fate::LostOut => {}
                Fate::LostBack => r += 1,
                Fate::Ok | Fate::Late => {
                    r += 1;
                    let mut x = s(seq, r, 100 + i64::from(seq), 50, 50);
                    x.late = matches!(f, Fate::Late);
                    arrivals.push(x);
                }
            }
        }
        let st = compute(sent, &arrivals, cfg(false));
        let last = arrivals.last().map_or(0, |a| a.seq) as usize;
        let truth_out = fates[..last].iter().filter(|f| matches!(f, Fate::LostOut)).count() as u32;
        let truth_back = fates[..last].iter().filter(|f| matches!(f, Fate::LostBack)).count() as u32;
        prop_assert_eq!(st.loss_sd, truth_out);
        prop_assert_eq!(st.loss_ds, truth_back);
        prop_assert_eq!(st.loss_mia, sent - last as u32);
        prop_assert_eq!(st.loss_sd + st.loss_ds + st.loss_mia, sent - st.received - st.late);
        if st.received > 0 {
            prop_assert_eq!(st.jitter_sd.count(), u64::from(st.received) - 1);
            prop_assert_eq!(st.jitter_ds.count(), u64::from(st.received) - 1);
        }
    }

    /// The same fates with the probes reordered on the way out (the responder numbers them in the
    /// order it receives them; neighbours swapped, as a sender that fell behind and sent a burst
    /// sees them) and the replies handled in any order: the split is still the truth. The first
    /// and the last probe are answered and stay in place, so that no loss is ambiguous (one that
    /// overtook the first reply or fell behind the last cannot be placed by any counter).
    #[test]
    fn loss_split_ignores_reordering_and_handling_order(
        (fates, swaps, handling) in proptest::collection::vec(prop_oneof![
            6 => Just(Fate::Ok), 2 => Just(Fate::LostOut), 2 => Just(Fate::LostBack), 1 => Just(Fate::Late)], 0..120)
            .prop_flat_map(|middle| {
                let n = middle.len() + 2;
                let fates: Vec<Fate> =
                    std::iter::once(Fate::Ok).chain(middle).chain(std::iter::once(Fate::Ok)).collect();
                let handling: Vec<usize> = (0..n).collect();
                (Just(fates), proptest::collection::vec(any::<bool>(), n), Just(handling).prop_shuffle())
            })
    ) {
        let sent = fates.len() as u32;
        // arrival order at the responder: probe i and i + 1 swap when swaps[i] and neither moved yet
        let mut order: Vec<usize> = (0..fates.len()).collect();
        let mut i = 1;
        while i + 2 < fates.len() {
            if swaps[i] {
                order.swap(i, i + 1);
                i += 2;
            } else {
                i += 1;
            }
        }
        let mut counter = vec![0u32; fates.len()];
        let mut r = 0;
        for &p in &order {
            if !matches!(fates[p], Fate::LostOut) {
                r += 1;
                counter[p] = r;
            }
        }
        let arrivals: Vec<Sample> = handling
            .iter()
            .filter(|&&p| matches!(fates[p], Fate::Ok | Fate::Late))
            .map(|&p| Sample { late: matches!(fates[p], Fate::Late), ..s(p as u32 + 1, counter[p], 100, 50, 50) })
            .collect();
        let st = compute(sent, &arrivals, cfg(false));
        let truth_out = fates.iter().filter(|f| matches!(f, Fate::LostOut)).count() as u32;
        let truth_back = fates.iter().filter(|f| matches!(f, Fate::LostBack)).count() as u32;
        prop_assert_eq!((st.loss_sd, st.loss_ds, st.loss_mia), (truth_out, truth_back, 0));
        prop_assert_eq!(
            (st.periods_sd.count == 0, st.periods_ds.count == 0),
            (truth_out == 0, truth_back == 0)
        );
    }
}
