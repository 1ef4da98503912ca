//! The hourly statistics and the per-run history: rttMonStatsCaptureTable and
//! rttMonStatsCollectTable (`rttMonStats 1`, `2`) from the store's hourly aggregates
//! (`GET /api/v1/operations/{id}/aggregated`), rttMonHistoryCollectionTable (`rttMonHistory 1`)
//! from its latest runs (`GET /api/v1/operations/{id}/history`).
//!
//! The hourly rows are indexed as the MIB says: rttMonCtrlAdminIndex, the hour's start as the
//! master's TimeStamp (rttMonStatsCaptureStartTimeIndex), then the path, the hop (1 and 1: the
//! agent keeps no per-path statistics, as IOS for every type but pathEcho) and, for the capture
//! table, the distribution bucket.

use super::{Latest, Uptime, View, address, display, hour_rows, sense};
use crate::store::{HourAggregate, code_name};
use ipsla_core::ops::ReturnCode;
use ipsla_wire::agentx::Value;
use std::net::IpAddr;

/// An Integer32 count (the statistics tables' counters are Integer32 (0..2147483647)).
fn int(n: u64) -> Value {
    Value::Integer(n.min(i32::MAX as u64) as i32)
}

/// A value in ms as the MIB's Gauge32: whole, rounded.
fn ms(us: f64) -> Value {
    Value::Gauge32((us / 1000.0).round().clamp(0.0, f64::from(u32::MAX)) as u32)
}

/// Runs of the hour that ended with `code`.
fn runs_with(h: &HourAggregate, code: ReturnCode) -> u64 {
    h.return_codes.get(&code_name(code)).copied().unwrap_or(0)
}

impl View {
    /// rttMonStatsCaptureEntry per stored hour and distribution bucket: completions (OK or over
    /// threshold) and their completion times, ms. With one bucket (IOS's default) the bucket is
    /// the hour; with more, each bucket has its count only: the sums, extremes and
    /// over-threshold count are kept per hour, not per bucket, so those are absent.
    pub(super) fn stats_capture(&mut self, t: &[u32], id: u32, hours: &[HourAggregate], up: Uptime) {
        for (stamp, h) in hour_rows(hours, up) {
            let c = &h.completion_us;
            if h.distribution.len() > 1 {
                for (n, b) in h.distribution.iter().enumerate() {
                    self.cell_at(t, 5, &[id, stamp, 1, 1, n as u32 + 1], int(b.count));
                }
                continue;
            }
            let index = [id, stamp, 1, 1, 1];
            self.cell_at(t, 5, &index, int(c.count));
            self.cell_at(t, 6, &index, int(runs_with(h, ReturnCode::OverThreshold)));
            self.cell_at(t, 7, &index, ms(c.sum));
            // sum of squares in ms² (stored in µs²), split into low and high 32 bits
            let sum2 = (c.sum2 / 1e6).round().clamp(0.0, u64::MAX as f64) as u64;
            self.cell_at(t, 8, &index, Value::Gauge32(sum2 as u32));
            self.cell_at(t, 9, &index, Value::Gauge32((sum2 >> 32) as u32));
            if let Some(max) = c.max {
                self.cell_at(t, 10, &index, ms(max));
            }
            if let Some(min) = c.min {
                self.cell_at(t, 11, &index, ms(min));
            }
        }
    }

    /// rttMonStatsCollectEntry per stored hour: the failed runs by return code, and the target
    /// (`target`: for echo, pathEcho, udpEcho, tcpConnect). Busies are not kept per hour, and
    /// disconnects, drops and the control/retrieve errors of multicast operations have no
    /// counterpart: those are absent.
    pub(super) fn stats_collect(
        &mut self,
        t: &[u32],
        id: u32,
        hours: &[HourAggregate],
        target: Option<IpAddr>,
        up: Uptime,
    ) {
        for (stamp, h) in hour_rows(hours, up) {
            let index = [id, stamp, 1, 1];
            self.cell_at(t, 2, &index, int(runs_with(h, ReturnCode::Timeout)));
            self.cell_at(t, 4, &index, int(runs_with(h, ReturnCode::NoConnection)));
            self.cell_at(t, 6, &index, int(runs_with(h, ReturnCode::SequenceError)));
            self.cell_at(t, 7, &index, int(runs_with(h, ReturnCode::VerifyError)));
            if let Some(a) = target {
                self.cell_at(t, 8, &index, Value::OctetString(address(a)));
            }
        }
    }

    /// rttMonHistoryCollectionEntry per stored run (`runs`, oldest first), indexed by
    /// rttMonCtrlAdminIndex, the life (1: the agent does not keep lives apart), the bucket (the
    /// run's place among those served, the oldest 1) and the sample (1: one per run, as IOS
    /// for every type but pathEcho). A failed run has no CompletionTime (IOS: 0).
    pub(super) fn history(&mut self, t: &[u32], id: u32, runs: &[Latest], target: Option<IpAddr>, up: Uptime) {
        for (n, l) in runs.iter().enumerate() {
            let index = [id, 1, n as u32 + 1, 1];
            self.cell_at(t, 4, &index, Value::TimeTicks(up.stamp(l.start_ns)));
            if let Some(a) = target {
                self.cell_at(t, 5, &index, Value::OctetString(address(a)));
            }
            if let Some(avg) = l.run.rtt_us.avg {
                self.cell_at(t, 6, &index, ms(avg));
            }
            self.cell_at(t, 7, &index, Value::Integer(sense(l.run.return_code)));
            if let Some(why) = &l.run.reason {
                self.cell_at(t, 9, &index, display(why));
            }
        }
    }
}
